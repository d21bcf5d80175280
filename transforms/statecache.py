"""A faster weigher for Beam's SDK state cache (a known Beam 2.6x performance cost).

Beam's SDK harness caches user state and weighs every value it caches, on
every read that loads it and every write, with ``objsize.get_deep_size``.
objsize 0.7 (what Beam 2.62 installs; 0.6.1 does the same) starts **every**
call by collecting the ids of the globals of every loaded module, to exclude
them: with Beam and the Google clients imported that is tens of thousands of
objects per state read or write. Profiled on a 10 k event DirectRunner run:
11.2 of 20.0 profiled seconds in objsize, 3.7 of them in ``vars()``
(docs/benchmarks.md); on the Flink cluster, with that scan skipped, weighing
was still 12 % of the SDK workers' bundle time.

``install()`` weighs a list of bytes (what every stallwatch cell holds:
values are kept pickled) by ``sys.getsizeof``, the same figure objsize gives
for it, and anything else as Beam does (same size, referents and filter
functions) minus the scan. Nothing is lost: Beam's filter already refuses to
measure types, modules, frames and functions, the only ways from a state
value into a module's globals. It is installed by the stateful DoFns'
``setup``, so it applies in whichever worker process runs them (in-process
FnApiRunner, LOOPBACK or PROCESS workers, Dataflow), and is idempotent.

Beam's commit of a bundle's state (one awaited round trip per changed cell)
is left as it is: sending them all before awaiting any was measured faster
on Flink, but made Flink-local batch runs end with a data-plane traceback
(docs/benchmarks.md).
"""

from __future__ import annotations

import sys
from typing import Any

_MARK = "_stallwatch_patched"


def install() -> bool:
    """Replace Beam's state-cache weigher; returns False if it already was."""
    from apache_beam.runners.worker import statecache
    if getattr(statecache.get_deep_size, _MARK, False):
        return False
    statecache.get_deep_size = _weigher(statecache)
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
