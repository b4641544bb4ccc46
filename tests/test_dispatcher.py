"""Dispatcher: zoo models end to end against onnxruntime, threads, feed errors, the per-shape plan cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_runtime import FakeOrtTarget, _diamond, _diamond_ref, plan_from_assignment

from dispatch.api import Dispatcher
from dispatch.errors import DispatchError
from dispatch.runtime import Measurement
from dispatch.validate import ValidationResult, compare, reference_outputs

STRATEGIES = ("optimal", "priority", "only:asic")
TINY = ("tiny_cnn", "tiny_transformer", "mlp")
LARGE = ("resnet18", "resnet50", "mobilenet_v2", "bert", "gpt2")


# -- with small fake targets and a fake planner: the Dispatcher's own logic ----------------------------------
class CountingPlanner:
    """Alternates nodes between targets 'a' and 'b'; counts how often it is asked (thread-safe)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, graph, targets, *, strategy, objective, **options):
        with self._lock:
            self.calls += 1
        return plan_from_assignment(graph, {n.name: "ab"[n.index % 2] for n in graph.nodes})



def _in_threads(work, n: int) -> None:
    """Run work(0) ... work(n - 1) on n threads at once and wait for all of them."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

def _fake(**kwargs) -> tuple[Dispatcher, CountingPlanner, dict[str, FakeOrtTarget]]:
    planner = CountingPlanner()
    targets = {"a": FakeOrtTarget("a"), "b": FakeOrtTarget("b")}
    return Dispatcher(_diamond(), targets, planner=planner, **kwargs), planner, targets


def _x(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 4)).astype(np.float32)


def test_symbolic_batch_gets_one_plan_per_shape_and_correct_outputs():
    d, planner, _ = _fake(shapes={"batch": 3})
    assert d.graph.values["x"].shape == (3, 4) and planner.calls == 1
    model = _diamond()
    for batch in (3, 5, 5, 3, 5):
        out = d.run({"x": _x(batch)})
        np.testing.assert_allclose(out["y"], _diamond_ref(_x(batch), model), rtol=1e-5, atol=1e-6)
    assert planner.calls == 2  # batch 3 (the default) and batch 5, each planned once
    assert d.cached_signatures == [((3, 4),), ((5, 4),)]
    assert d.plan_for({"x": _x(5)}) is not d.plan and d.plan_for({"x": _x(3)}) is d.plan


def test_plan_cache_is_bounded_lru_and_keeps_the_default():
    d, planner, _ = _fake(plan_cache_size=2)  # default batch 1 (symbolic dims bind to 1)
    for batch in (2, 3, 2, 4):  # after 4: the LRU keeps 2 and 4 (3 was least recently used)
        d.run({"x": _x(batch)})
    assert d.cached_signatures == [((2, 4),), ((4, 4),)]
    calls = planner.calls
    d.run({"x": _x(1)})  # the default plan is kept outside the bound and never re-planned
    d.run({"x": _x(2)})
    assert planner.calls == calls
    d.run({"x": _x(3)})  # evicted, so planned again
    assert planner.calls == calls + 1 and len(d.cached_signatures) == 2
    with pytest.raises(DispatchError, match="plan_cache_size"):
        _fake(plan_cache_size=0)


def test_concurrent_first_runs_of_a_new_shape_plan_it_once():
    d, planner, _ = _fake()
    barrier = threading.Barrier(8)
    outs: list[np.ndarray] = [None] * 8  # type: ignore[list-item]

    def work(i: int) -> None:
        barrier.wait()
        outs[i] = d.run({"x": _x(7)})["y"]

    _in_threads(work, 8)
    assert planner.calls == 2  # the default, then batch 7 once for all eight threads
    assert all(np.array_equal(o, outs[0]) for o in outs)


def test_threads_with_mixed_shapes_agree_with_serial_runs():
    d, _, _ = _fake(plan_cache_size=2)
    # 4 shapes through a cache of 2: evictions race runs
    feeds = [{"x": _x(1 + i % 4, seed=i)} for i in range(8)]
    serial = [d.run(f)["y"] for f in feeds]
    bad: list[int] = []

    def work(i: int) -> None:
        for _ in range(100):
            if not np.array_equal(d.run(feeds[i])["y"], serial[i]):
                bad.append(i)

    _in_threads(work, 8)
    assert bad == []


@pytest.mark.parametrize("feeds, message", [
    ({}, r"Input 'x' is missing from the feeds"),
    ({"x": np.zeros((2, 4), np.float32), "extra": np.zeros(2, np.float32)}, r"Feed 'extra' is not an input"),
    ({"x": np.zeros((2, 4), np.int64)}, r"Input 'x' has dtype int64 but the model expects float32"),
    ({"x": np.zeros((2, 4, 1), np.float32)}, r"Input 'x' has 3 dimensions"),
    ({"x": np.zeros((2, 3), np.float32)}, r"Input 'x' has shape \(2, 3\) but the model expects float32 "
                                          r"\(batch, 4\): dimension 1 must be 4"),
])
def test_wrong_feeds_raise_dispatch_error(feeds, message):
    d, _, _ = _fake()
    with pytest.raises(DispatchError, match=message):
        d.run(feeds)


def test_validate_measure_report_and_close():
    planner = CountingPlanner()
    given = {"a": FakeOrtTarget("a"), "b": FakeOrtTarget("b")}
    closed: list[str] = []
    for t in given.values():
        t.close = lambda name=t.name: closed.append(name)  # type: ignore[method-assign]
    with Dispatcher(_diamond(), given, planner=planner, shapes={"batch": 2}) as d:
        v = d.validate()
        assert isinstance(v, ValidationResult) and v.ok and v.max_abs_err <= 1e-5
        m = d.measure(repeat=3, warmup=1)
        assert isinstance(m, Measurement) and len(m.segments) == 4 and m.repeat == 3
        r = d.report()
        assert r["schema_version"] == 1 and r["model"]["num_nodes"] == 4
        assert [s["target"] for s in r["plan"]["segments"]] == ["a", "b", "a", "b"]
        assert [n["target"] for n in r["nodes"]] == ["a", "b", "a", "b"]
        assert set(r["nodes"][0]["cost"]) == {"a", "b"} and set(r["targets"]) == {"a", "b"}
        assert r["measured"]["validated"] is True and r["measured"]["total_s"] == m.total_s
        assert r["measured"]["provider"].startswith("a: CPUExecutionProvider")
    assert closed == []  # targets given to the Dispatcher belong to the caller
    with pytest.raises(DispatchError, match="closed"):
        d.run({"x": _x(2)})


def test_validate_catches_a_wrong_result():
    class Wrong(FakeOrtTarget):
        def compile(self, graph, nodes, inputs, outputs):
            run = super().compile(graph, nodes, inputs, outputs)
            return lambda feeds: {k: v * 1.01 for k, v in run(feeds).items()}  # 1 % off

    d = Dispatcher(_diamond(), {"a": Wrong("a"), "b": FakeOrtTarget("b")}, planner=CountingPlanner())
    v = d.validate({"x": _x(1)})
    # h and s come out 1 % high on 'a', so y = s·h is off by about 2 % of its scale, far above rtol = 1e-4
    assert not v.ok and v.max_abs_err > 1e-2 * v.outputs[0].scale
    loose = Dispatcher(_diamond(), {"a": Wrong("a"), "b": FakeOrtTarget("b")}, planner=CountingPlanner(),
                       atol=1.0)
    assert loose.validate({"x": _x(1)}).ok  # tolerances are configurable


def test_bad_targets_argument():
    with pytest.raises(DispatchError, match="non-empty dict"):
        Dispatcher(_diamond(), {}, planner=CountingPlanner())
    with pytest.raises(DispatchError, match="Unknown target preset 'no-such-chip'"):
        Dispatcher(_diamond(), {"a": "no-such-chip"}, planner=CountingPlanner())
    with pytest.raises(DispatchError, match="Target 'gpu' must be a preset name.*not int 42"):
        Dispatcher(_diamond(), {"gpu": 42}, planner=CountingPlanner())
    with pytest.raises(DispatchError, match="Target names must be non-empty strings"):
        Dispatcher(_diamond(), {7: "h100-sxm"}, planner=CountingPlanner())


@pytest.mark.parametrize("tol", ["0.1", float("nan"), float("inf"), -1.0, True, None])
def test_bad_tolerances_are_refused_where_they_enter(tol):
    # regression: rtol="0.1" raised TypeError, rtol=nan was accepted and failed every later validation
    for kw in ({"rtol": tol}, {"atol": tol}):
        with pytest.raises(DispatchError, match="must be a finite non-negative number"):
            Dispatcher(_diamond(), {"a": FakeOrtTarget("a"), "b": FakeOrtTarget("b")},
                       planner=CountingPlanner(), **kw)


def test_failed_builds_for_new_shapes_leave_no_lock_behind():
    # regression: every distinct failing shape left a per-signature lock, growing memory without bound
    class FailingForBatch4(CountingPlanner):
        def __call__(self, graph, targets, **kw):
            if graph.values["x"].shape[0] == 4:
                raise DispatchError("no plan for batch 4")
            return super().__call__(graph, targets, **kw)

    d = Dispatcher(_diamond(), {"a": FakeOrtTarget("a"), "b": FakeOrtTarget("b")}, planner=FailingForBatch4(),
                   shapes={"batch": 3})
    for _ in range(3):
        with pytest.raises(DispatchError, match="no plan for batch 4"):
            d.run({"x": _x(4)})
    assert d._building == {}
    assert d.run({"x": _x(5)})["y"].shape[0] == 5  # other shapes still build
    assert d._building == {}


# -- zoo models, real targets and partitioner ----------------------------------------------------------------
def _check_zoo(name: str, strategy: str) -> None:
    from models import example_inputs

    feeds = example_inputs(name)
    with Dispatcher(name, strategy=strategy) as d:
        assert {s.target for s in d.plan.segments} <= set(d.targets)
        if strategy == "only:asic":
            assert any(s.target == "asic" for s in d.plan.segments)
        v = d.validate(feeds)
        assert v.ok, f"{name} {strategy}: max abs err {v.max_abs_err:.3g}, max rel err {v.max_rel_err:.3g}"


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", TINY)
def test_tiny_zoo_models_match_onnxruntime(name, strategy):
    _check_zoo(name, strategy)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", LARGE)
def test_zoo_models_match_onnxruntime(name, strategy):
    _check_zoo(name, strategy)


@pytest.mark.parametrize("strategy", ("optimal", "only:asic"))  # one segment; many segments and transfers
@pytest.mark.parametrize("name", ("tiny_cnn", "tiny_transformer"))
def test_eight_threads_times_hundred_runs_match_serial(name, strategy):
    from models import example_inputs

    with Dispatcher(name, strategy=strategy) as d:
        base = example_inputs(name)
        rng = np.random.default_rng(1)
        feeds = []
        for _ in range(8):
            f = {}
            for k, v in base.items():
                f[k] = rng.permutation(v.ravel()).reshape(v.shape)  # same values and dtype, another order
            feeds.append(f)
        serial = [d.run(f) for f in feeds]
        bad: list[str] = []

        def work(i: int) -> None:
            for _ in range(100):
                out = d.run(feeds[i])
                if any(not np.array_equal(out[k], serial[i][k]) for k in serial[i]):
                    bad.append(f"thread {i}")

        _in_threads(work, 8)
        assert bad == []


def test_tiny_cnn_two_batch_sizes_two_plans():
    with Dispatcher("tiny_cnn", strategy="optimal") as d:
        assert d.graph.values["input"].shape == (1, 3, 32, 32)
        for batch in (1, 4, 4):
            x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
            feeds = {"input": x}
            out = d.run(feeds)
            entry = d._entry(((batch, 3, 32, 32),))
            assert entry.graph.values["input"].shape == (batch, 3, 32, 32)
            assert compare(out, reference_outputs(entry.graph, feeds)).ok
        assert d.cached_signatures == [((1, 3, 32, 32),), ((4, 3, 32, 32),)]
        assert d.plan_for({"input": np.zeros((4, 3, 32, 32), np.float32)}) is not d.plan


def test_zoo_wrong_feeds():
    with Dispatcher("tiny_transformer") as d:
        ids = np.zeros((1, 16), np.int64)
        with pytest.raises(DispatchError, match=r"'input_ids' has dtype int32 but the model expects int64"):
            d.run({"input_ids": ids.astype(np.int32)})
        with pytest.raises(DispatchError, match=r"Input 'input_ids' is missing"):
            d.run({"ids": ids})
        # regression: ids beyond the vocabulary (128) raised onnxruntime's InvalidArgument, not DispatchError
        with pytest.raises(DispatchError, match=r"onnxruntime rejected the input values .*idx=128"):
            d.run({"input_ids": np.full((1, 16), 128, np.int64)})
        assert d.run({"input_ids": ids})["last_hidden_state"].shape == (1, 16, 32)  # still usable after it


def test_unknown_plan_option_names_it_and_the_valid_ones():
    # regression: Dispatcher(model, plan_options={"nosuch": 1}) was silently accepted
    targets = {"a": FakeOrtTarget("a"), "b": FakeOrtTarget("b")}
    with pytest.raises(DispatchError, match=r"Strategy 'optimal' has no option 'nosuch'; it takes "
                                            r"time_limit_s, mip_rel_gap, method, relax_first, edp_steps, "
                                            r"enumerate_limit, makespan_enumerate_limit\."):
        Dispatcher(_diamond(), targets, plan_options={"nosuch": 1})
    with pytest.raises(DispatchError, match=r"Strategy 'greedy' has no option 'time_limit_s'; it takes none"):
        Dispatcher(_diamond(), targets, strategy="greedy", plan_options={"time_limit_s": 1})
    with Dispatcher(_diamond(), targets, plan_options={"time_limit_s": 5.0}) as d:  # a real option is fine
        assert d.plan.strategy == "optimal"


def test_shape_binding_errors_read_right_from_the_api():
    # regression: Dispatcher(shapes=...) said "--shape gives input ...", a flag the API caller never used
    targets = {"a": FakeOrtTarget("a"), "b": FakeOrtTarget("b")}
    with pytest.raises(DispatchError) as e:
        Dispatcher(_diamond(), targets, planner=CountingPlanner(), shapes={"x": (2, 4, 1)})
    assert str(e.value).startswith("The shape binding for input 'x' gives 3 dimensions but the model "
                                   "declares 2")
    assert "--shape" not in str(e.value)


def test_model_of_a_wrong_type_is_dispatch_error():
    # regression: Dispatcher(123) raised TypeError from pathlib
    with pytest.raises(DispatchError, match="not int"):
        Dispatcher(123, planner=CountingPlanner())


def test_report_has_the_contract_sections_and_names_the_provider():
    with Dispatcher("tiny_cnn", strategy="only:asic") as d:
        d.compare_strategies(["optimal", "only:gpu", "only:asic"])
        d.validate()
        m = d.measure(repeat=3, warmup=1)
        r = d.report()
    assert list(r)[:4] == ["schema_version", "model", "totals", "nodes"]
    assert {"targets", "plan", "strategies", "measured"} <= set(r)
    assert set(r["strategies"]) == {"optimal", "only:gpu", "only:asic"}
    assert [s["id"] for s in r["measured"]["segments"]] == [s.id for s in d.plan.segments]
    assert r["measured"]["validated"] is True and r["measured"]["total_s"] == m.total_s
    # measured here by onnxruntime's provider (the CPU one on a machine without CUDA) and NumPy; predicted for
    # an H100 and a TPU-like array
    provider = r["measured"]["provider"]
    assert f"gpu: {d.targets['gpu'].provider}" in provider and "asic: numpy" in provider
    assert r["targets"]["gpu"]["spec"] == "h100-sxm"
    for seg_id, (predicted, measured, target, provider) in m.versus_predicted().items():
        assert predicted == d.plan.segments[seg_id].cost.latency_s and measured > 0
        assert provider == d.targets[target].provider


def _evicted_graph_is_freed(d: Dispatcher, feeds_of) -> bool:
    """Plan batch 2, push it out of a cache of one with batch 3, and see whether its graph is garbage."""
    import gc
    import weakref

    d.run(feeds_of(2))
    ref = weakref.ref(d._entry(d._checker.check(feeds_of(2))).graph)
    d.run(feeds_of(3))
    assert d.cached_signatures == [d._checker.check(feeds_of(3))]
    gc.collect()
    return ref() is None


def test_evicted_plans_are_freed():
    d, _, _ = _fake(plan_cache_size=1)
    assert _evicted_graph_is_freed(d, lambda b: {"x": _x(b)})


def test_evicted_plans_are_freed_with_real_targets():
    with Dispatcher("tiny_cnn", plan_cache_size=1) as d:
        assert _evicted_graph_is_freed(
            d, lambda b: {"input": np.zeros((b, 3, 32, 32), np.float32)})
