"""A faster weigher for Beam's SDK state cache (a known Beam 2.6x performance regression).

Beam's SDK harness caches user state and weighs every value it caches with
``objsize.get_deep_size``. objsize 0.7 (what Beam 2.62 installs; 0.6.1 does the
same) starts **every** call by collecting the ids of the globals of every
loaded module, to exclude them: with Beam and the Google clients imported that
is tens of thousands of objects per state read or write. Profiled on a 10 k
event DirectRunner run: 11.2 of 20.0 profiled seconds in objsize, 3.7 of them
in ``vars()`` (docs/benchmarks.md).

``install()`` keeps Beam's weighing (same size, referents and filter
functions) and only skips that scan. Nothing is lost: Beam's filter already
refuses to measure types, modules, frames and functions, the only ways from a
state value into a module's globals. It is installed by the stateful DoFns'
``setup``, so it applies in whichever worker process runs them (in-process
FnApiRunner, LOOPBACK or PROCESS workers, Dataflow), and is idempotent.
"""

from __future__ import annotations

from typing import Any

_MARK = "_stallwatch_weigher"


def install() -> bool:
    """Replace Beam's state-cache weigher; returns False if it already was."""
    from apache_beam.runners.worker import statecache
    if getattr(statecache.get_deep_size, _MARK, False):
        return False
    import objsize

    def get_deep_size(*objs: Any) -> int:
        return objsize.get_deep_size(
            *objs,
            get_size_func=statecache._size_func,
            get_referents_func=statecache._get_referents_func,
            filter_func=statecache._filter_func,
            exclude_modules_globals=False)

    setattr(get_deep_size, _MARK, True)
    statecache.get_deep_size = get_deep_size
    return True
