"""Pipelined execution (dispatch/pipeline.py) and the Dispatcher's ahead-of-time API (warmup, on_new_shape,
build_times, threads)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dispatch import Dispatcher
from dispatch.errors import DispatchError
from dispatch.pipeline import Pipeline


def _feeds(n: int, batch: int = 2) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [{"input": rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)} for _ in range(n)]


@pytest.fixture(scope="module")
def two_target() -> Dispatcher:
    # only:asic on tiny_cnn: 5 segments alternating asic, gpu, asic, gpu, asic (MaxPool/GAP on the GPU)
    d = Dispatcher("tiny_cnn", strategy="only:asic", shapes={"batch": 2}, threads={"gpu": 1, "asic": 1})
    yield d
    d.close()


def test_plan_alternates_targets(two_target: Dispatcher) -> None:
    assert [s.target for s in two_target.plan.segments] == ["asic", "gpu", "asic", "gpu", "asic"]


def test_pipelined_runs_equal_serial_bit_for_bit(two_target: Dispatcher) -> None:
    feeds = _feeds(8 * 5)
    serial = [two_target.run(f) for f in feeds]
    got: list[dict[str, np.ndarray] | None] = [None] * len(feeds)
    errors: list[BaseException] = []

    def client(k: int) -> None:  # 8 threads, 5 requests each, several in flight at once
        try:
            for i in range(k, len(feeds), 8):
                got[i] = two_target.submit(feeds[i]).result(timeout=60)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for s, g in zip(serial, got, strict=True):
        assert g is not None and s.keys() == g.keys()
        for name in s:
            assert s[name].dtype == g[name].dtype and np.array_equal(s[name], g[name])
    p = two_target.pipeline
    assert p.in_flight == 0 and set(p.queue_depths().values()) == {0}
    # 40 runs x 5 steps: 3 on the asic worker, 2 on the gpu worker per run (plus earlier tests' runs)
    assert p.steps_run()["asic"] >= 120 and p.steps_run()["gpu"] >= 80
    assert all(v > 0 for v in p.busy_seconds().values())


def test_pipeline_bounded_and_errors_propagate(two_target: Dispatcher) -> None:
    runtime = two_target._default.runtime
    with Pipeline(["gpu", "asic"], max_in_flight=2) as p:
        bad = p.submit(runtime, {"input": np.zeros((2, 5, 32, 32), np.float32)})  # 5 channels: the conv fails
        with pytest.raises(Exception):  # noqa: B017 - whatever the kernel raises reaches the caller
            bad.result(timeout=30)
        assert p.in_flight == 0  # the failed run gave its slot back
        good = p.run(runtime, _feeds(1)[0])
        assert np.array_equal(good["output"], runtime.run(_feeds(1)[0])["output"])
    with pytest.raises(DispatchError, match="closed"):
        p.submit(runtime, _feeds(1)[0])
    with Pipeline(["gpu"], max_in_flight=1) as p, pytest.raises(DispatchError, match="no worker for"):
        p.submit(runtime, _feeds(1)[0])


def test_warmup_refuse_and_build_times() -> None:
    with Dispatcher("tiny_cnn", strategy="only:gpu", warmup=[{"batch": 4}, {"input": [8, 3, 32, 32]}],
                    on_new_shape="refuse", plan_cache_size=1) as d:
        warmed = {(1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)}
        assert {s[0] for s in d.build_times} == warmed and all(t > 0 for t in d.build_times.values())
        for b in (4, 8, 1, 4):  # warmed entries stay although plan_cache_size is 1
            x = np.ones((b, 3, 32, 32), np.float32)
            assert d.run({"input": x})["output"].shape == (b, 10)
        assert d.cache_stats == {"hits": 4, "builds": 3, "refused": 0}
        refused = (r"No plan for input shapes \[2x3x32x32\].*refuses new shapes.*"
                   r"\[1x3x32x32\], \[4x3x32x32\], \[8x3x32x32\]")
        with pytest.raises(DispatchError, match=refused):
            d.run({"input": np.ones((2, 3, 32, 32), np.float32)})
        assert d.cache_stats["refused"] == 1
        assert d.warmup([{"batch": 2}])[((2, 3, 32, 32),)] > 0  # now it is planned, and runs
        assert d.run({"input": np.ones((2, 3, 32, 32), np.float32)})["output"].shape == (2, 10)
        assert d.warmup([{"batch": 2}]) == {((2, 3, 32, 32),): 0.0}  # already planned: no build


def test_bad_arguments() -> None:
    with pytest.raises(DispatchError, match="on_new_shape must be one of build, refuse"):
        Dispatcher("tiny_cnn", on_new_shape="wait")
    with pytest.raises(DispatchError, match=r"threads names \['npu'\], which are not targets"):
        Dispatcher("tiny_cnn", threads={"npu": 1})
    with pytest.raises(DispatchError, match="threads must be a positive integer"):
        Dispatcher("tiny_cnn", threads=0)
    with pytest.raises(DispatchError, match="warmup takes a list of bindings"):
        Dispatcher("tiny_cnn", warmup={"batch": 2})


def test_thread_total_split_over_targets() -> None:
    with Dispatcher("tiny_cnn", strategy="only:gpu", threads=3) as d:  # 3 over gpu, asic: 2 and 1
        assert d.targets["gpu"].threads == 2
        sess = d._default.runtime._steps[0].run.session
        assert sess.get_session_options().intra_op_num_threads == 2
