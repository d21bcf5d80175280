"""Two costs of Beam's SDK-side user state, removed (Beam 2.62; both are in
Beam's own code, not ours). ``install()`` applies both, once per process.

1. **The weigher.** Beam's SDK harness weighs every value its state cache
   holds, on every read that loads it and every write, with
   ``objsize.get_deep_size``, which starts every call by collecting the ids
   of the globals of every loaded module (tens of thousands of objects with
   Beam and the Google clients imported). The replacement weighs a list of
   bytes (what every stallwatch cell holds: values are kept pickled) by
   ``sys.getsizeof``, the figure objsize gives for it, and anything else as
   Beam does minus that scan. Nothing is lost: Beam's filter already refuses
   types, modules, frames and functions, the only ways from a state value
   into a module's globals.

2. **The commit.** At a bundle's end the SDK writes back every changed state
   cell and waits for the runner's answer to each before sending the next.
   The replacement sends every cell's clear and append requests first, then
   waits for all of them: the same requests, in the same order on the one
   state stream, and the bundle still ends only once every write is
   acknowledged.

Installed through ``harness.install()`` by the stateful DoFns' ``setup``;
tests/unit/transforms/test_statecache.py fails if Beam's code it replaces
changes. Measurements: docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from typing import Any

_MARK = "_stallwatch_patched"


def install() -> bool:
    """Apply both; returns False if they already were."""
    from apache_beam.runners.worker import bundle_processor, statecache
    if getattr(statecache.get_deep_size, _MARK, False):
        return False
    statecache.get_deep_size = _weigher(statecache)
    bundle_processor.FnApiUserStateContext.commit = _pipelined_commit(bundle_processor)
    return True


def _weigher(statecache):
    import objsize

    def get_deep_size(*objs: Any) -> int:
        if len(objs) == 1 and type(objs[0]) is list and all(type(b) is bytes for b in objs[0]):
            return sys.getsizeof(objs[0]) + sum(map(sys.getsizeof, objs[0]))
        return objsize.get_deep_size(
            *objs,
            get_size_func=statecache._size_func,
            get_referents_func=statecache._get_referents_func,
            filter_func=statecache._filter_func,
            exclude_modules_globals=False)

    setattr(get_deep_size, _MARK, True)
    return get_deep_size


def _pipelined_commit(bundle_processor):
    # Cells whose commit is a clear and/or an append of what was added;
    # anything else (ordered lists) commits as Beam does.
    plain = (bundle_processor.SynchronousBagRuntimeState,
             bundle_processor.SynchronousSetRuntimeState)

    def commit(self) -> None:
        pending = []
        for state in self._all_states.values():
            cell = getattr(state, "_underlying_bag_state", state)   # value and combining states
            if not isinstance(cell, plain):
                state.commit()
                continue
            if cell._cleared:
                pending.append(cell._state_handler.clear(cell._state_key))
            if cell._added_elements:
                pending.append(cell._state_handler.extend(
                    cell._state_key, cell._value_coder.get_impl(), cell._added_elements))
        for sent in pending:
            sent.get()

    setattr(commit, _MARK, True)
    return commit
