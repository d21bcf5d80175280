"""transforms/statecache.py: Beam's state-cache weigher without the per-call module scan."""

import pickle

import objsize
from apache_beam.runners.worker import statecache as beam_statecache

from tests.builders import ev
from transforms import statecache


def beams_weight(value) -> int:
    """What Beam 2.62's own weigher computes (objsize with its default module scan)."""
    return objsize.get_deep_size(value, get_size_func=beam_statecache._size_func,
                                 get_referents_func=beam_statecache._get_referents_func,
                                 filter_func=beam_statecache._filter_func)


def test_install__same_weights_as_beams_weigher_for_state_values():
    values = [[pickle.dumps(ev("play", i, i)) for i in range(50)],    # a bag of pickled beacons
              [], [b""], [pickle.dumps((1, 2, None))],                # empty, a value cell
              [b"x", "not bytes"], ev("heartbeat", 3, 3), (1, "view", 2.5, None), {"k": [b"x" * 100]}]
    saved = beam_statecache.get_deep_size
    beam_statecache.get_deep_size = lambda *objs: 0            # as if not installed yet
    try:
        assert statecache.install() is True
        assert [beam_statecache.get_deep_size(v) for v in values] == [beams_weight(v) for v in values]
        assert statecache.install() is False                  # idempotent
    finally:
        beam_statecache.get_deep_size = saved

