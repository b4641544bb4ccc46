"""Generated feeds have every input's dtype and rank (rank 0 included), and the feed checker accepts them.

Regression: the default feeds for a rank-0 bool input (an If's condition) were a NumPy scalar, which the
checker rejected (and onnxruntime refuses: it takes arrays only).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dispatch import Dispatcher, DispatchError
from dispatch.frontend import load
from dispatch.ir import numpy_dtype
from dispatch.validate import FeedChecker, check_feeds, feed_specs, generate_feeds

ml_dtypes = pytest.importorskip("ml_dtypes")  # onnx depends on it: bfloat16 and float8 as NumPy dtypes

ELEM_TYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FLOAT16",
              "BFLOAT16", "FLOAT", "DOUBLE"]


def identity_model(shape: list[int], types: list[str] = ELEM_TYPES) -> onnx.ModelProto:
    """One input per element type, each passed through Identity to an output of the same name + '_out'."""
    vi = helper.make_tensor_value_info
    names = [t.lower() for t in types]
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n in names]
    graph = helper.make_graph(nodes, "ids", [vi(n, getattr(TensorProto, t), shape) for n, t in
                                             zip(names, types, strict=True)],
                              [vi(f"{n}_out", getattr(TensorProto, t), shape) for n, t in
                               zip(names, types, strict=True)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("shape", [[], [2, 3]], ids=["rank0", "rank2"])
def test_generated_feeds_have_each_inputs_dtype_and_rank(shape: list[int]) -> None:
    model = identity_model(shape)
    graph = load(model)
    feeds = generate_feeds(graph, seed=0)
    for t in ELEM_TYPES:
        x = feeds[t.lower()]
        assert type(x) is np.ndarray, t  # never a NumPy scalar
        assert x.shape == tuple(shape) and x.dtype == numpy_dtype(getattr(TensorProto, t)), t
    assert check_feeds(model, feeds) == tuple(tuple(shape) for _ in ELEM_TYPES)
    assert feeds["bfloat16"].dtype == np.dtype(ml_dtypes.bfloat16)


def test_generated_feeds_run_and_validate_for_every_dtype() -> None:
    # bfloat16 left out: onnxruntime's Python binding takes no ml_dtypes arrays as feeds (running bfloat16
    # models is the dtype work's part); its generated feed is checked above.
    types = [t for t in ELEM_TYPES if t != "BFLOAT16"]
    with Dispatcher(identity_model([], types), strategy="only:gpu") as d:
        result = d.validate()  # generated feeds, checked, run, compared
        assert result.ok and len(result.outputs) == len(types)


def test_integer_feeds_stay_within_their_dtype_and_index_bounds() -> None:
    # int8 indices into a 300-row table: bounded by the table (300) and by int8's range (127).
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "emb",
                              [vi("ids", TensorProto.INT8, [64])], [vi("y", TensorProto.FLOAT, [64, 4])],
                              [onnx.numpy_helper.from_array(np.zeros((300, 4), np.float32), "table")])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    ids = generate_feeds(g, seed=0)["ids"]
    assert ids.dtype == np.int8 and ids.min() >= 0 and ids.max() > 2  # indices, not a 0/1 mask


def test_checker_names_numpy_scalars() -> None:
    checker = FeedChecker(feed_specs(identity_model([])))
    feeds = generate_feeds(load(identity_model([])))
    feeds["bool"] = np.bool_(True)
    with pytest.raises(DispatchError, match=r"'bool' is a NumPy scalar \(bool\).*np\.asarray\(value, "
                                            r"dtype=np\.bool\) \(a rank-0 array for a scalar\)\.$"):
        checker.check(feeds)
    feeds["bool"] = np.asarray(True)
    feeds["bfloat16"] = np.asarray(1.0, np.float32)
    with pytest.raises(DispatchError, match=r"astype\(ml_dtypes\.bfloat16\)"):
        checker.check(feeds)


def test_a_missing_rank_0_input_is_described_as_rank_0() -> None:
    checker = FeedChecker(feed_specs(identity_model([], ["BOOL", "FLOAT"])))
    with pytest.raises(DispatchError, match=r"Input 'bool' is missing from the feeds; pass a rank-0 bool "
                                            r"\(shape \(\)\) array under that name"):
        checker.check({"float": np.asarray(1.0, np.float32)})
    with pytest.raises(DispatchError, match=r"has 1 dimensions \(shape \(1,\)\) but the model expects 0"):
        checker.check({"float": np.asarray(1.0, np.float32), "bool": np.asarray([True])})
