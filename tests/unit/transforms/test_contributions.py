"""ViewerViews, the per-viewer detection stage: what its state keeps."""

from tests.builders import watched
from transforms.contributions import DELIVERY, ViewerViews
from transforms.facts import view_facts
from transforms.rolling import Member
from transforms.thresholds import Thresholds
from transforms.viewstate import summarize_views

HOUR_S = 3600


def _member(view_id, start_s, video="vid", stall_at_s=None):
    view, = summarize_views(view_id, watched(view_id, "u1", video, start_s=start_s, to_s=600,
                                             stall_at_s=stall_at_s, cdn="cdn-a"))
    t = Thresholds()
    return Member(view.view_key, (1, 0), view.end_ms, view_facts(view, t.delivery_dimensions))



def test_viewer_views__state_keeps_views_within_retention_plus_a_view_life():
    """A viewer who never goes quiet: 24 hourly views. With a keep of 7 h the
    state holds the views that ended in the last 7 h; the evicted ones
    send no delivery change (their cells age out by bucket downstream)."""
    stage = ViewerViews(Thresholds(), 4, 4, 3_600_000, keep_ms=7 * HOUR_S * 1000)
    acc = stage.empty("u1")
    for hour in range(24):
        member = _member(f"v{hour}", hour * HOUR_S, video=f"vid{hour % 3}", stall_at_s=300)
        acc = stage.fold(acc, member, member.end_ms)
        outputs, _ = stage.evaluate("u1", acc, member.end_ms, False)
        delivery = [o.value[1] for o in outputs if o.tag == DELIVERY]
        assert delivery and all(d.view_key == member.member_key for d in delivery), hour
    # v16 ended exactly 7 h before v23 did: kept; v15 and older are gone.
    assert sorted(acc.views) == sorted(_member(f"v{h}", h * HOUR_S).member_key
                                       for h in range(16, 24))
    assert set(acc.delivery) == set(acc.views)


def test_viewer_views__without_retention_keeps_every_view():
    """Batch (no retention): nothing is evicted, as the reference detect() sees every view."""
    stage = ViewerViews(Thresholds(), 4, 4, 3_600_000)
    acc = stage.empty("u1")
    for hour in range(24):
        member = _member(f"v{hour}", hour * HOUR_S)
        acc = stage.fold(acc, member, member.end_ms)
        stage.evaluate("u1", acc, member.end_ms, False)
    assert len(acc.views) == 24
