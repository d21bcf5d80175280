"""The soak audience (bench/stream.py): each title's segment breaks at its own
time, so content stalls there start only after the break."""

from pipeline.generator import scenario
from pipeline.generator.workload import simulate_messages
from bench.stream import FAULT_FROM_MS, FAULT_TO_MS, Triggers, _events, _ms

ORIGIN = 1_800_000_000_000


def test_soak__titles_break_one_after_another_and_triggers_see_the_5th_viewer():
    s = scenario.soak(ORIGIN, viewers=900, join_ms=240_000, faults=3)
    breaks = {f.video_id: f.broken_from_ms for f in s.content_faults}
    assert sorted(breaks.values()) == [ORIGIN + 60_000, ORIGIN + 120_000, ORIGIN + 180_000]
    messages, truth = simulate_messages(s, seed=7)
    messages.sort(key=lambda m: m.arrival_ms)
    stalls = {title: [] for title in breaks}
    for m in messages:
        for e in _events(m.body):
            if (e.get("video_id") in breaks and e.get("event") == "waiting"
                    and FAULT_FROM_MS <= e.get("playhead_ms", -1) < FAULT_TO_MS):
                stalls[e["video_id"]].append(_ms(e["ts"]))
    for title, at in breaks.items():
        before = [ts for ts in stalls[title] if ts < at - 60_000]     # clock skew allowance
        assert len(before) <= 1, (title, len(before))                 # background stalls only
        assert sum(ts >= at for ts in stalls[title]) >= 5, title

    triggers = Triggers(breaks)
    for i, m in enumerate(messages):
        triggers([m], float(i))
    assert set(triggers.fired) == set(breaks)
    order = sorted(triggers.fired, key=triggers.fired.get)
    assert order == sorted(breaks, key=breaks.get)                    # in the order they broke
    assert triggers.messages == len(messages) and triggers.events >= truth["input_records"]
