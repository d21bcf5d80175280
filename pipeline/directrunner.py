"""Beam 2.62's streaming DirectRunner, minus two costs it pays per bundle and stage
and the state of keys it is done with, and with its metrics counting every bundle.

The DirectRunner's streaming engine (BundleBasedDirectRunner) starts every
bundle of every ParDo by (1) pickling and unpickling the DoFn, a check that
it *can* be pickled, and (2) introspecting the DoFn's methods for state and
timer parameters (``userstate.get_dofn_specs``, through
``is_stateful_dofn`` several times). Profiled on a TestStream run of
stallwatch's graph (docs/benchmarks.md): 46 % of its time in (2), 25 % in
(1), our code a few percent. A 24-viewer streaming detection test took 81 s
with them and 9 s without, with identical output.

``install()`` removes both, for this process only:
- the pickle check: every DoFn is pickled anyway when the pipeline is
  translated (``Pipeline.to_runner_api``), before any bundle runs;
- the introspection is memoized per DoFn *class*: state and timer specs
  are class attributes, the same for every instance.
And it lets go of keys: the engine keeps the state of every key a stateful
step ever saw, and scans all of them for due timers on every scheduling
pass (``WatermarkManager.extract_all_timers``: 74 % of a streaming run's
CPU in docs/benchmarks.md), so its cost and memory grew with every view
ever seen. A key whose state and timers are all cleared (our steps clear
them on their GC timer) is dropped after its bundle commits; the engine
makes a new, empty one if the key comes back (``get_keyed_state``).

And it fixes the streaming engine's metrics: each worker thread's
StateSampler caches one ScopedState per step, bound to the MetricsContainer
of the first bundle it ran, so every later bundle of that step on that
thread counted into a container that was already committed, and counters
reported the first bundle only (a Map over 9 elements in 3 TestStream
bundles reported 3; tested). The cache is cleared before each bundle.

It checks that the Beam functions it wraps are where 2.62 has them and
raises if not, so a Beam upgrade that moves them fails loudly (tested).
"""

from __future__ import annotations

from typing import Any

_MARK = "_stallwatch_memoized"


def install() -> bool:
    """Apply both changes; returns False if they already were."""
    from apache_beam.runners.direct import evaluation_context, executor, transform_evaluator
    from apache_beam.transforms import userstate
    if getattr(userstate.get_dofn_specs, _MARK, False):
        return False
    for module, name in ((userstate, "get_dofn_specs"), (userstate, "is_stateful_dofn"),
                         (transform_evaluator, "get_dofn_specs"),
                         (transform_evaluator, "is_stateful_dofn")):
        if not callable(getattr(module, name, None)):
            raise RuntimeError(f"apache_beam {module.__name__}.{name} is gone: "
                               "pipeline/directrunner.py needs updating for this Beam")
    evaluator = transform_evaluator._ParDoEvaluator
    if not callable(getattr(evaluation_context.EvaluationContext, "handle_result", None)) or \
            not hasattr(evaluation_context.DirectStepContext, "get_keyed_state"):
        raise RuntimeError("apache_beam EvaluationContext.handle_result is gone: "
                           "pipeline/directrunner.py needs updating for this Beam")
    if not callable(getattr(executor.TransformExecutor, "call", None)):
        raise RuntimeError("apache_beam TransformExecutor.call is gone: "
                           "pipeline/directrunner.py needs updating for this Beam")
    if "perform_dofn_pickle_test" not in evaluator.__init__.__code__.co_varnames:
        raise RuntimeError("apache_beam _ParDoEvaluator no longer takes perform_dofn_pickle_test: "
                           "pipeline/directrunner.py needs updating for this Beam")

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
            with self._lock:
                states = self._transform_keyed_states[result.transform]
                for key in list(result.partial_keyed_state):
                    state = states.get(key)
                    if (state is not None and not state.global_state and not state.state
                            and not any(state.timers.values())):
                        del states[key]
        return committed

    evaluation_context.EvaluationContext.handle_result = handle_result_and_forget_empty_keys
    return True
