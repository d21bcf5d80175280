"""Committed positions: atomic, merged, never moved back by a late commit."""

import threading

from pipeline.io.streams.checkpoint import Checkpoint
from pipeline.io.streams.kinesis import later_positions


def _pos(seq, done=False):
    return {"seq": str(seq) if seq is not None else None, "done": done, "parents": []}


def test_later_positions__keeps_the_furthest_per_shard_and_every_shard():
    stored = {"a": _pos(50), "b": _pos(9, done=True), "c": _pos(1)}
    new = {"a": _pos(40), "b": _pos(12), "d": _pos(None)}
    merged = later_positions(stored, new)
    assert merged == {"a": _pos(50), "b": _pos(9, done=True), "c": _pos(1), "d": _pos(None)}


def test_checkpoint__late_commit_of_an_older_bundle_does_not_move_back(tmp_path):
    checkpoint = Checkpoint(str(tmp_path / "c.json"), "kinesis://s")
    checkpoint.save({"a": _pos(100)}, merge=later_positions)
    checkpoint.save({"a": _pos(60)}, merge=later_positions)
    assert checkpoint.load() == {"a": _pos(100)}


def test_checkpoint__concurrent_commits_from_finalizer_threads(tmp_path):
    # Flink finalizes several bundles at once after a checkpoint; a shared
    # temporary file name once made renames fail with ENOENT.
    checkpoint = Checkpoint(str(tmp_path / "c.json"), "kinesis://s")
    errors = []

    def commit(n):
        try:
            for i in range(30):
                checkpoint.save({f"shard-{n}": _pos(i)}, merge=later_positions)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert checkpoint.load() == {f"shard-{n}": _pos(29) for n in range(4)}
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]
