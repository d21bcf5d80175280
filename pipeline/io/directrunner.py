"""Beam 2.62's streaming DirectRunner (BundleBasedDirectRunner), made cheaper
per bundle and per key, and with counters that count every bundle.

``install()`` changes, for this process only:
- no per-bundle pickle check of the DoFn: every DoFn is pickled anyway when
  the pipeline is translated (``Pipeline.to_runner_api``);
- ``userstate.get_dofn_specs`` / ``is_stateful_dofn`` memoized per DoFn class
  (state and timer specs are class attributes), and
  ``core.get_function_arguments`` per DoFn instance (per class for the
  restriction and watermark-estimator providers) and method, a copy handed
  out each time;
- a key whose state and timers are all cleared is dropped after its bundle
  commits (the engine otherwise keeps every key it ever saw;
  ``get_keyed_state`` makes a new one if the key comes back);
- each worker thread's StateSampler cache is cleared before each bundle: it
  binds a step to the MetricsContainer of its first bundle, so counters
  counted the first bundle only;
- due timers come from ``_TimerIndex`` (each key's earliest event-time timer
  in a heap, recomputed when a bundle of that key commits) instead of asking
  every key on every scheduling pass: the same firings.

It checks that the Beam functions it wraps are where 2.62 has them and raises
if not, so a Beam upgrade that moves them fails loudly. Measurements:
docs/streaming.md ("The DirectRunner, patched").
"""

from __future__ import annotations

import heapq
import itertools
import threading
import weakref
from typing import Any, Optional

_MARK = "_stallwatch_memoized"
_INDEX = "_stallwatch_timer_index"


class _TimerIndex:
    """Which keys of one step have a due timer, kept up to date by commits.

    ``earliest[key]`` is the key's earliest event-time timer; the heap holds
    (timestamp, n, key) entries, stale ones skipped when popped; ``ready`` is
    the keys whose earliest timer the watermark has passed (they stay ready
    until a commit of theirs is seen, as the full scan would keep finding
    them); ``realtime`` the keys with a processing-time timer, asked every
    time as the scan asks them."""

    def __init__(self, keys) -> None:
        self._lock = threading.Lock()
        self._dirty: set = set(keys)
        self._earliest: dict = {}
        self._heap: list = []
        self._ready: set = set()
        self._realtime: set = set()
        self._order = itertools.count()

    def touched(self, keys) -> None:
        with self._lock:
            self._dirty.update(keys)

    def due(self, states: dict, watermark) -> set:
        from apache_beam.transforms.timeutil import TimeDomain
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for key in dirty:
            self._ready.discard(key)
            self._realtime.discard(key)
            earliest = None
            state = states.get(key)
            for timers in list(state.timers.values()) if state is not None else ():
                for (_, domain, _), timestamp in list(timers.items()):
                    if domain != TimeDomain.WATERMARK:
                        self._realtime.add(key)
                    elif earliest is None or timestamp < earliest:
                        earliest = timestamp
            if earliest is None:
                self._earliest.pop(key, None)
            else:
                self._earliest[key] = earliest
                heapq.heappush(self._heap, (earliest, next(self._order), key))
        while self._heap and self._heap[0][0] <= watermark:
            timestamp, _, key = heapq.heappop(self._heap)
            if self._earliest.get(key) == timestamp:
                self._ready.add(key)
        return self._ready | self._realtime


def _timer_index(watermarks) -> Optional[_TimerIndex]:
    return watermarks.__dict__.get(_INDEX)


def install() -> bool:
    """Apply the changes above; returns False if they already were."""
    from apache_beam.runners.direct import (evaluation_context, executor, transform_evaluator,
                                            watermark_manager)
    from apache_beam.transforms import core, userstate
    if getattr(userstate.get_dofn_specs, _MARK, False):
        return False
    for module, name in ((userstate, "get_dofn_specs"), (userstate, "is_stateful_dofn"),
                         (transform_evaluator, "get_dofn_specs"),
                         (transform_evaluator, "is_stateful_dofn")):
        if not callable(getattr(module, name, None)):
            raise RuntimeError(f"apache_beam {module.__name__}.{name} is gone: "
                               "pipeline/io/directrunner.py needs updating for this Beam")
    evaluator = transform_evaluator._ParDoEvaluator
    if not callable(getattr(evaluation_context.EvaluationContext, "handle_result", None)) or \
            not hasattr(evaluation_context.DirectStepContext, "get_keyed_state"):
        raise RuntimeError("apache_beam EvaluationContext.handle_result is gone: "
                           "pipeline/io/directrunner.py needs updating for this Beam")
    if not callable(getattr(executor.TransformExecutor, "call", None)):
        raise RuntimeError("apache_beam TransformExecutor.call is gone: "
                           "pipeline/io/directrunner.py needs updating for this Beam")
    tw = getattr(watermark_manager, "_TransformWatermarks", None)
    if (not callable(getattr(tw, "extract_transform_timers", None))
            or not callable(getattr(watermark_manager.WatermarkManager, "get_watermarks", None))
            or not hasattr(watermark_manager, "TimerFiring")):
        raise RuntimeError("apache_beam _TransformWatermarks.extract_transform_timers is gone: "
                           "pipeline/io/directrunner.py needs updating for this Beam")
    if "perform_dofn_pickle_test" not in evaluator.__init__.__code__.co_varnames:
        raise RuntimeError("apache_beam _ParDoEvaluator no longer takes perform_dofn_pickle_test: "
                           "pipeline/io/directrunner.py needs updating for this Beam")

    if not callable(getattr(core, "get_function_arguments", None)):
        raise RuntimeError("apache_beam core.get_function_arguments is gone: "
                           "pipeline/io/directrunner.py needs updating for this Beam")

    arguments = core.get_function_arguments
    signatures: Any = weakref.WeakKeyDictionary()

    def get_function_arguments(obj, func):
        # A DoFn by instance (a CallableWrapperDoFn's process is its own
        # function); a restriction or watermark-estimator provider, made new
        # for every bundle, by class: its methods are the class's.
        try:
            known = signatures.setdefault(obj if isinstance(obj, core.DoFn) else type(obj), {})
        except TypeError:                       # unhashable or not weakly referable
            return arguments(obj, func)
        if func not in known:
            known[func] = arguments(obj, func)
        args, defaults = known[func]
        return list(args), list(defaults)

    core.get_function_arguments = get_function_arguments

    original = userstate.get_dofn_specs
    specs: dict[type, Any] = {}

    def get_dofn_specs(dofn):
        cls = type(dofn)
        if cls not in specs:
            specs[cls] = original(dofn)
        return specs[cls]

    def is_stateful_dofn(dofn) -> bool:
        state_specs, timer_specs = get_dofn_specs(dofn)
        return bool(state_specs or timer_specs)

    setattr(get_dofn_specs, _MARK, True)
    for module in (userstate, transform_evaluator):
        module.get_dofn_specs = get_dofn_specs
        module.is_stateful_dofn = is_stateful_dofn

    init = evaluator.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._perform_dofn_pickle_test = False

    evaluator.__init__ = __init__

    call = executor.TransformExecutor.call

    def call_with_fresh_metrics(self, state_sampler):
        getattr(state_sampler, "_states_by_name", {}).clear()
        return call(self, state_sampler)

    executor.TransformExecutor.call = call_with_fresh_metrics

    handle_result = evaluation_context.EvaluationContext.handle_result

    def handle_result_and_forget_empty_keys(self, completed_bundle, completed_timers, result):
        committed = handle_result(self, completed_bundle, completed_timers, result)
        if result.partial_keyed_state:
            index = _timer_index(self._watermark_manager.get_watermarks(result.transform))
            if index is not None:
                index.touched(result.partial_keyed_state)
            with self._lock:
                states = self._transform_keyed_states[result.transform]
                for key in list(result.partial_keyed_state):
                    state = states.get(key)
                    if (state is not None and not state.global_state and not state.state
                            and not any(state.timers.values())):
                        del states[key]
        return committed

    evaluation_context.EvaluationContext.handle_result = handle_result_and_forget_empty_keys

    def extract_transform_timers(self):
        """Beam's extract_transform_timers, asking only the keys _TimerIndex names."""
        with self._lock:
            index = _timer_index(self)
            if index is None:
                index = _TimerIndex(list(self._keyed_states))
                setattr(self, _INDEX, index)
            watermark, now = self._input_watermark, self._clock.time()
            fired, has_realtime_timer = [], False
            for key in index.due(self._keyed_states, watermark):
                state = self._keyed_states.get(key)
                if state is None:
                    continue
                timers, had_realtime_timer = state.get_timers(watermark=watermark,
                                                              processing_time=now)
                has_realtime_timer = has_realtime_timer or had_realtime_timer
                for window, (name, domain, timestamp, tag) in timers:
                    fired.append(watermark_manager.TimerFiring(
                        key, window, name, domain, timestamp, dynamic_timer_tag=tag))
            self._fired_timers.update(fired)
            return fired, has_realtime_timer

    watermark_manager._TransformWatermarks.extract_transform_timers = extract_transform_timers
    return True
