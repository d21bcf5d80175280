"""The accounting check: read = parsed, records = events + dead letters, and
every counter equals what the files hold; anything else is named with figures."""

from pipeline.results.accounting import reconcile, verdict

COUNTERS = {"source_messages": 10, "messages": 10, "input_records": 14, "parsed_events": 12,
            "dead_letters": 2, "duplicates_dropped": 1, "late_beacons": 1}
WRITTEN = {"events_in_views": 10, "duplicates_dropped": 1, "late_beacons": 1, "dead_letters": 2}


def test_accounting__a_complete_run_is_ok():
    result = reconcile(COUNTERS, WRITTEN, None)
    assert result["ok"] and result["problems"] == [] and verdict(result) is None
    assert result["messages_read"] == 10 and result["written"] == WRITTEN


def test_accounting__messages_the_pipeline_never_parsed():
    result = reconcile(COUNTERS, WRITTEN, read=12)          # the launcher fed 12
    assert verdict(result) == ("records read and records accounted differ: "
                               "read 12 messages, parsed 10")


def test_accounting__events_missing_from_the_outputs():
    lost = dict(WRITTEN, events_in_views=7)
    assert not reconcile(COUNTERS, lost, None)["ok"]
    assert "12 events parsed, 9 in the outputs (views 7 + duplicates 1 + late 1)" in \
        verdict(reconcile(COUNTERS, lost, None))


def test_accounting__dead_letters_not_written_and_records_that_do_not_add_up():
    problems = reconcile(dict(COUNTERS, input_records=15), dict(WRITTEN, dead_letters=1),
                         None)["problems"]
    assert problems == ["15 records != 12 events + 2 dead letters",
                        "2 dead letters counted, 1 written"]


def test_accounting__a_source_without_a_count_is_not_ok():
    counters = {k: v for k, v in COUNTERS.items() if k != "source_messages"}
    assert reconcile(counters, WRITTEN, None)["problems"] == [
        "the source reported no count of what it read"]


def test_accounting__remote_outputs_check_the_counters_only():
    result = reconcile(COUNTERS, None, None)
    assert result["ok"] and "written" not in result
