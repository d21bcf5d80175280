"""The transition rule: which alert versions are news for a receiver."""

from tests.builders import alert, ms
from transforms.model import Notice
from transforms.notices import Notified, due, notices


def _walk(*versions):
    """Feed versions in order; the notices of each."""
    last, out = None, []
    for version in versions:
        told, last = notices(last, version)
        out.append(told)
    return out, last


def test_notices__open_then_growing_exposure_then_closed__opened_and_closed_only():
    told, last = _walk(alert(1, "open", 6), alert(2, "open", 7), alert(3, "open", 8),
                       alert(4, "closed", 8))
    assert told == [[Notice.OPENED], [], [], [Notice.CLOSED]]
    assert last == Notified(ms(600), 4, False, 8, incidents=1)


def test_notices__affected_viewers_up_by_half__worse_once_then_measured_from_it():
    told, _ = _walk(alert(1, "open", 6), alert(2, "open", 8), alert(3, "open", 9),
                    alert(4, "open", 13), alert(5, "open", 14))
    assert told == [[Notice.OPENED], [], [Notice.WORSE], [], [Notice.WORSE]]  # 9 >= 1.5 * 6; 13 < 1.5 * 9 <= 14


def test_notices__small_counts_need_one_more_viewer():
    told, _ = _walk(alert(1, "open", 1), alert(2, "open", 1), alert(3, "open", 2))
    assert told == [[Notice.OPENED], [], [Notice.WORSE]]


def test_notices__first_seen_closed__opened_then_closed():
    told, _ = _walk(alert(3, "closed", 9))
    assert told == [[Notice.OPENED, Notice.CLOSED]]


def test_notices__retracted_after_open__retracted():
    told, _ = _walk(alert(1, "open"), alert(2, "retracted"))
    assert told == [[Notice.OPENED], [Notice.RETRACTED]]


def test_notices__retracted_never_told_open__nothing():
    assert _walk(alert(1, "retracted"))[0] == [[]]
    assert _walk(alert(1, "closed"), alert(2, "retracted"))[0] == [[Notice.OPENED, Notice.CLOSED], []]


def test_notices__reopened_after_closed__opened_again():
    told, _ = _walk(alert(1, "open"), alert(2, "closed"), alert(3, "open"), alert(4, "closed"))
    assert told == [[Notice.OPENED], [Notice.CLOSED], [Notice.OPENED], [Notice.CLOSED]]


def test_notices__closed_again_with_updated_numbers__nothing():
    told, _ = _walk(alert(1, "open"), alert(2, "closed", 6), alert(3, "closed", 7))
    assert told == [[Notice.OPENED], [Notice.CLOSED], []]


def test_notices__redelivered_or_older_version__nothing():
    told, last = _walk(alert(1, "open"), alert(3, "closed"), alert(2, "open"), alert(3, "closed"))
    assert told == [[Notice.OPENED], [Notice.CLOSED], [], []]
    assert last.version == 3 and not last.open


def test_notices__a_restarted_run_counts_versions_from_1__ordered_by_evaluation_time():
    before_restart = Notified(ms(610), 5, True, 6)
    assert notices(before_restart, alert(1, "open", 6, as_of_s=605))[0] == []     # replayed
    told, last = notices(before_restart, alert(2, "closed", 6, as_of_s=1300))
    assert told == [Notice.CLOSED] and last == Notified(ms(1300), 2, False, 6)


def test_notices__pending__told_open_once_open_that_long():
    last = None
    told = []
    for v, at in ((1, 600), (2, 620), (3, 631)):
        out, last = notices(last, alert(v, "open", 6, as_of_s=at), pending_ms=30_000)
        told.append(out)
    assert told == [[], [], [Notice.OPENED]] and last.pending_since_ms is None


def test_notices__pending__retracted_sooner_never_told_closed_sooner_told_both_ends():
    _, pending = notices(None, alert(1, "open", as_of_s=600), pending_ms=30_000)
    assert pending.pending_since_ms == ms(600) and due(pending, 30_000) == ms(630)
    assert notices(pending, alert(2, "retracted", as_of_s=605), 30_000)[0] == []
    assert notices(pending, alert(2, "closed", as_of_s=1300), 30_000)[0] == [
        Notice.OPENED, Notice.CLOSED]


def test_notices__a_reopened_alert_is_a_new_incident():
    _, last = _walk(alert(1, "open"), alert(2, "closed"), alert(3, "open"))
    assert last.incidents == 2 and last.open


def test_notices__resolve_hold__closed_once_closed_that_long_reopen_cancels():
    _, last = notices(None, alert(1, "open", as_of_s=600))
    told, closing = notices(last, alert(2, "closed", as_of_s=1200), resolve_ms=900_000)
    assert told == [] and closing.open and closing.closing_since_ms == ms(1200)
    assert due(closing, 0, 900_000) == ms(2100)
    told, reopened = notices(closing, alert(3, "open", as_of_s=1400), resolve_ms=900_000)
    assert told == [] and reopened.open and reopened.closing_since_ms is None
    assert notices(closing, alert(3, "closed", as_of_s=2100), resolve_ms=900_000)[0] == [
        Notice.CLOSED]
    assert notices(closing, alert(3, "retracted", as_of_s=1300), resolve_ms=900_000)[0] == [
        Notice.RETRACTED]
