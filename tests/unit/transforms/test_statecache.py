"""transforms/statecache.py: Beam's state-cache weigher without the per-call module scan,
and a bundle's state writes sent together, then awaited."""

import ast
import hashlib
import inspect
import pickle

import objsize
import pytest
from apache_beam import coders
from apache_beam.runners.worker import bundle_processor
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


class _Runner:
    """A state handler that logs what is sent and when each answer is awaited."""

    def __init__(self) -> None:
        self.log: list = []

    def clear(self, key):
        return self._send(("clear", key))

    def extend(self, key, coder, elements):
        return self._send(("append", key, list(elements)))

    def _send(self, request):
        self.log.append(request)
        log, n = self.log, len(self.log)

        class Answer:
            def get(self):
                log.append(("awaited", n))
        return Answer()


def test_install__commit_sends_every_cells_writes_before_awaiting_any():
    statecache.install()
    runner = _Runner()

    def cell(name):
        return bundle_processor.SynchronousBagRuntimeState(runner, name, coders.BytesCoder())

    added, rewritten, cleared, only_read = (cell("added"), cell("value"), cell("cleared"),
                                            cell("read"))
    added.add(b"1")
    value = bundle_processor.ReadModifyWriteRuntimeState(rewritten)
    value.write(b"2")
    cleared.clear()
    context = object.__new__(bundle_processor.FnApiUserStateContext)
    context._all_states = {("a",): added, ("v",): value, ("c",): cleared, ("r",): only_read}
    context.commit()
    sent = [("append", "added", [b"1"]), ("clear", "value"), ("append", "value", [b"2"]),
            ("clear", "cleared")]
    assert runner.log == sent + [("awaited", n) for n in range(1, 5)]


# Beam's code that transforms/statecache.py replaces or reads, as Beam 2.62
# ships it: a digest of each function's source. An upgrade that changes any
# of them fails here, naming it, instead of silently running a patch written
# for other code.
_BEAM_SOURCES = {
    ("statecache", "get_deep_size"): "6d73d2f408586950",
    ("statecache", "_size_func"): "a1288c445550315c",
    ("statecache", "_get_referents_func"): "371394ccfb1b3133",
    ("statecache", "_filter_func"): "4ea2d44c91f79b7c",
    ("bundle_processor", "FnApiUserStateContext.commit"): "196d6610e33a21ec",
    ("bundle_processor", "SynchronousBagRuntimeState.__init__"): "281805c093673199",
    ("bundle_processor", "SynchronousBagRuntimeState.commit"): "09f22b1991a9cf90",
    ("bundle_processor", "SynchronousSetRuntimeState.__init__"): "68c24276c0b36a51",
    ("bundle_processor", "SynchronousSetRuntimeState.commit"): "09f22b1991a9cf90",
}


def _source_digest(module, dotted: str) -> str:
    text = open(module.__file__, encoding="utf-8").read()
    node = ast.parse(text)
    for name in dotted.split("."):
        node = next(n for n in ast.iter_child_nodes(node) if getattr(n, "name", None) == name)
    return hashlib.sha256(ast.get_source_segment(text, node).encode()).hexdigest()[:16]


@pytest.mark.parametrize("module, dotted", sorted(_BEAM_SOURCES))
def test_install__beams_code_it_patches_is_the_code_it_was_written_for(module, dotted):
    from apache_beam.runners.worker import bundle_processor, statecache
    found = _source_digest({"statecache": statecache, "bundle_processor": bundle_processor}[module],
                           dotted)
    assert found == _BEAM_SOURCES[module, dotted], (
        f"Beam's {module}.{dotted} changed: re-verify transforms/statecache.py against it, "
        "then update this digest")


def test_install__objsize_still_takes_beams_measuring_functions():
    import objsize
    wanted = {"get_size_func", "get_referents_func", "filter_func", "exclude_modules_globals"}
    assert wanted <= set(inspect.signature(objsize.get_deep_size).parameters)
