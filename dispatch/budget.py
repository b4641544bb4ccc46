"""A memory budget: refuse, in one sentence, a model, binding or feed file whose tensors would not fit.

The budget defaults to half of this machine's available memory (MemAvailable in /proc/meminfo, else the
free physical pages from os.sysconf); `--max-memory SIZE` and `max_memory=` change it. Every check runs
before the allocation it guards, from declared sizes only (shapes, dtypes, constant size operands, .npy
headers), so a refusal costs no memory:

* a model's inputs (after shape bindings) and initializers, and the outputs of the operators whose size is
  an operand (ConstantOfShape, Expand, Tile, Range) when that operand is a constant: before onnx shape
  inference, whose data propagation materialises such values (measured: a ConstantOfShape of [2^38] feeding
  an Add made onnx 1.23's infer_shapes(data_prop=True) raise bad_alloc after 2.3 GB);
* every tensor whose shape inference fixed (a Conv with pads of 1e5): after inference without data
  propagation, before the inference with it, constant folding and execution;
* an .npz member: its .npy header (name, dtype, shape), read from the zip before the member is inflated.

A single tensor larger than the budget is refused: that is what the issue's bombs are, and a plan holds at
least that one tensor at once. Sums over a plan's live tensors are not estimated.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import onnx

from dispatch.errors import DispatchError

__all__ = ["available_bytes", "default_budget", "resolve_budget", "parse_size", "format_bytes", "check_bytes",
           "check_declared", "check_inferred", "generated_elements", "MAX_DIM"]

# A dimension above this cannot be stored in ONNX's int64 dim_value with room for products; anything near it
# is far past any budget anyway.
MAX_DIM = 2**62
_FRACTION = 0.5  # of the available memory
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def available_bytes() -> int:
    """This machine's available memory: MemAvailable from /proc/meminfo, else free pages x page size."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return 2**34  # no way to ask: 16 GiB


def default_budget() -> int:
    """Half of the available memory."""
    return int(available_bytes() * _FRACTION)


def parse_size(text: str) -> int:
    """'512M', '4GiB', '2e9', '1.5G' -> bytes (binary K/M/G/T; KB/MB/GB/TB decimal); DispatchError if not."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in _UNITS or not math.isfinite(float(m.group(1))) or float(m.group(1)) <= 0:
        raise DispatchError(f"Cannot read the memory size {text!r}; write a positive number of bytes with an "
                            "optional unit, e.g. 512M, 4G or 2GiB.")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def resolve_budget(max_memory: int | str | None) -> int:
    """The budget in bytes: None -> default_budget(); an int or a size string -> that many bytes."""
    if max_memory is None:
        return default_budget()
    if isinstance(max_memory, str):
        return parse_size(max_memory)
    if isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory <= 0:
        raise DispatchError(f"max_memory must be a positive number of bytes or a size like '4G', not "
                            f"{max_memory!r}.")
    return max_memory


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - the loop returns


_RAISE = "raise it with --max-memory SIZE (max_memory= in the API)"


def check_bytes(what: str, dtype: np.dtype | None, shape: tuple[int, ...], budget: int,
                fix: str = "bind smaller shapes") -> None:
    """Refuse `what` (e.g. "Input 'x'") of this dtype and shape when it needs more than `budget` bytes."""
    itemsize = dtype.itemsize if dtype is not None and dtype.itemsize else 4
    need = math.prod(int(d) for d in shape) * itemsize
    if need > budget:
        dt = dtype.name if dtype is not None else "unknown dtype"
        raise DispatchError(f"{what} would need {format_bytes(need)} ({dt}, shape {list(shape)}), more than "
                            f"the memory budget of {format_bytes(budget)}; {fix}, or "
                            f"{_RAISE}.")


def _dtype(elem_type: int) -> np.dtype | None:
    from dispatch.ir import numpy_dtype

    return numpy_dtype(elem_type)


def _dims(tp: onnx.TypeProto) -> tuple[int, ...] | None:
    """Static dims of a tensor type (None when any is unknown or the rank is)."""
    if tp.WhichOneof("value") != "tensor_type" or not tp.tensor_type.HasField("shape"):
        return None
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tp.tensor_type.shape.dim)
    return dims if all(d >= 0 for d in dims) else None


def _const_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Small integer constants (initializers and Constant nodes of at most 64 elements): size operands."""
    from onnx import numpy_helper

    out: dict[str, np.ndarray] = {}
    for t in graph.initializer:
        if math.prod(t.dims) <= 64 and t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            out[t.name] = numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value" and math.prod(a.t.dims) <= 64 and a.t.data_type in (
                        onnx.TensorProto.INT64, onnx.TensorProto.INT32):
                    out[n.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_int", "value_ints"):
                    out[n.output[0]] = np.asarray(a.i if a.name == "value_int" else list(a.ints))
    return out


def generated_elements(op_type: str, inputs: list[np.ndarray | None],
                       first_shape: tuple[int, ...] | None = None) -> int | None:
    """Elements of the output of an operator whose size is an operand, from its constant operands; None when
    they are not known (ConstantOfShape: shape; Expand: shape; Tile: repeats; Range: start, limit, delta)."""
    try:
        if op_type == "ConstantOfShape" and inputs and inputs[0] is not None:
            return math.prod(int(d) for d in np.asarray(inputs[0]).reshape(-1))
        if op_type == "Expand" and len(inputs) > 1 and inputs[1] is not None:
            shape = [int(d) for d in np.asarray(inputs[1]).reshape(-1)]
            if first_shape is not None:  # broadcast with the input's shape
                rank = max(len(shape), len(first_shape))
                a = [1] * (rank - len(shape)) + shape
                b = [1] * (rank - len(first_shape)) + list(first_shape)
                shape = [max(x, y) for x, y in zip(a, b, strict=True)]
            return math.prod(shape)
        if op_type == "Tile" and len(inputs) > 1 and inputs[1] is not None and first_shape is not None:
            reps = [int(d) for d in np.asarray(inputs[1]).reshape(-1)]
            return math.prod(first_shape) * math.prod(reps)
        if op_type == "Range" and len(inputs) > 2 and all(x is not None for x in inputs[:3]):
            start, limit, delta = (float(np.asarray(x).reshape(-1)[0]) for x in inputs[:3])
            return max(0, math.ceil((limit - start) / delta)) if delta else None
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    return None


def check_declared(model: onnx.ModelProto, budget: int) -> None:
    """Before shape inference: the inputs (symbolic dims bound), the initializers, and the outputs of
    ConstantOfShape/Expand/Tile/Range whose size operands are constants."""
    g = model.graph
    for vi in g.input:
        dims = _dims(vi.type)
        if dims is not None:
            check_bytes(f"Input '{vi.name}'", _dtype(vi.type.tensor_type.elem_type), dims, budget)
    for t in g.initializer:
        check_bytes(f"Initializer '{t.name}'", _dtype(t.data_type), tuple(t.dims), budget)
    consts = _const_values(g)
    shapes = {vi.name: _dims(vi.type) for vi in g.input}
    shapes.update({t.name: tuple(t.dims) for t in g.initializer})
    for n in g.node:
        if n.domain not in ("", "ai.onnx") or n.op_type not in ("ConstantOfShape", "Expand", "Tile", "Range"):
            continue
        ins = [consts.get(i) for i in n.input]
        count = generated_elements(n.op_type, ins, shapes.get(n.input[0]) if n.input else None)
        if count is not None and count * 4 > budget:  # at least 4 bytes an element is assumed here
            raise DispatchError(f"Output '{n.output[0]}' of {n.op_type} node '{n.name or n.op_type}' would "
                                f"need {format_bytes(count * 4)} or more ({count} elements), more than the "
                                f"memory budget of {format_bytes(budget)}; fix the node's size operand, or "
                                f"{_RAISE}.")


_SAME_VALUES = {"Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Flatten"}
_ARITH = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
          "Div": lambda a, b: a // b, "Max": np.maximum, "Min": np.minimum}


def _shape_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the small integer tensors that compute sizes (Shape of static tensors, constants, and the
    arithmetic, Concat, Gather and reshaping between them), in Python ints: what onnx's data propagation
    would compute, without materialising what they size."""
    vals = {k: np.asarray(v).astype(object) for k, v in _const_values(graph).items()}
    dims = {vi.name: _dims(vi.type) for vi in (*graph.input, *graph.value_info, *graph.output)}
    dims.update({t.name: tuple(t.dims) for t in graph.initializer})
    for n in graph.node:
        if n.domain not in ("", "ai.onnx") or not n.output:
            continue
        ins = [vals.get(i) for i in n.input]
        attrs = {a.name: a for a in n.attribute}
        try:
            if n.op_type == "Shape" and dims.get(n.input[0]) is not None:
                d = dims[n.input[0]]
                start = attrs["start"].i if "start" in attrs else 0
                end = attrs["end"].i if "end" in attrs else len(d)
                out = np.array(d[start:end], dtype=object)
            elif n.op_type == "Size" and dims.get(n.input[0]) is not None:
                out = np.array(math.prod(dims[n.input[0]]), dtype=object)
            elif n.op_type in _SAME_VALUES and ins and ins[0] is not None:
                out = ins[0].reshape(-1)
            elif n.op_type in _ARITH and len(ins) == 2 and all(x is not None for x in ins):
                out = np.asarray(_ARITH[n.op_type](ins[0], ins[1]), dtype=object)
            elif n.op_type == "Concat" and ins and all(x is not None for x in ins):
                out = np.concatenate([x.reshape(-1) for x in ins])
            elif n.op_type == "Gather" and len(ins) == 2 and all(x is not None for x in ins):
                out = ins[0].reshape(-1)[ins[1].astype(np.int64)]
            else:
                continue
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError):
            continue
        out = np.asarray(out, dtype=object)
        if out.size <= 64:
            vals[n.output[0]] = out
    return vals


def check_inferred(graph: onnx.GraphProto, budget: int) -> None:
    """After shape inference: every tensor with a static shape fits the budget (named with its producer), and
    so do the outputs of ConstantOfShape/Expand/Tile/Range whose size operands are computed from shapes."""
    vals = _shape_values(graph)
    dims = {vi.name: _dims(vi.type) for vi in (*graph.input, *graph.value_info, *graph.output)}
    for n in graph.node:
        if n.domain in ("", "ai.onnx") and n.op_type in ("ConstantOfShape", "Expand", "Tile", "Range"):
            count = generated_elements(n.op_type, [vals.get(i) for i in n.input],
                                       dims.get(n.input[0]) if n.input else None)
            if count is not None and count * 4 > budget:
                raise DispatchError(f"Output '{n.output[0]}' of {n.op_type} node '{n.name or n.op_type}' "
                                    f"would need {format_bytes(count * 4)} or more ({count} elements), more "
                                    f"than the memory budget of {format_bytes(budget)}; fix the shapes it is "
                                    f"computed from, or {_RAISE}.")
    producer = {o: n for n in graph.node for o in n.output}
    for vi in (*graph.value_info, *graph.output):
        dims = _dims(vi.type)
        if dims is None:
            continue
        n = producer.get(vi.name)
        what = f"Tensor '{vi.name}'" + (f" (output of {n.op_type} node '{n.name}')" if n is not None else "")
        check_bytes(what, _dtype(vi.type.tensor_type.elem_type), dims, budget)
