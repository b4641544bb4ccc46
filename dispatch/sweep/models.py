"""Models for sweep points: how a point's batch and shape.SYMBOL values bind a model, and a per-process
cache of loaded, analysed graphs (one load and analysis per model and shape).

`batch` binds the symbolic first dimension of the model's first input. Most zoo models are exported with a
fixed batch of 1 (their Reshape constants bake it in, so the dimension cannot simply be rebound); for those
a sweep with a batch axis exports the same torch module (same seed, same weights) once more with a symbolic
batch dimension, cached in $DISPATCH_CACHE/sweep/. A model file with a fixed batch is refused.
"""

from __future__ import annotations

import io
import os
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch.errors import DispatchError

__all__ = ["ModelInfo", "inspect_model", "batch_model", "GraphCache"]

_SYMBOL = "batch"  # the symbol a batch export gives dimension 0


@dataclass(frozen=True)
class ModelInfo:
    """A model's inputs as declared: ((name, (dim_value or dim_param, ...)), ...)."""

    ref: str
    inputs: tuple[tuple[str, tuple[Any, ...]], ...]
    zoo: bool

    @property
    def symbols(self) -> set[str]:
        return {d for _, dims in self.inputs for d in dims if isinstance(d, str)}

    def batch_symbol(self) -> str | None:
        """The symbol of the first input's first dimension, or None when it is fixed (or there is none)."""
        if not self.inputs or not self.inputs[0][1]:
            return None
        d = self.inputs[0][1][0]
        return d if isinstance(d, str) else None


def inspect_model(ref: str) -> ModelInfo:
    """Read the model (not analyse it): DispatchError with the loader's sentence when it does not load."""
    from dispatch.frontend import load_model_proto

    proto, _ = load_model_proto(ref)
    init = {i.name for i in proto.graph.initializer}
    inputs = tuple((i.name, tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                                  for d in i.type.tensor_type.shape.dim))
                   for i in proto.graph.input if i.name not in init)
    zoo = not (ref.endswith(".onnx") or "/" in ref)
    return ModelInfo(ref, inputs, zoo)


def check_binding(info: ModelInfo, label: str, axes: Sequence[str]) -> None:
    """One sentence when an axis cannot bind this model (batch on a fixed-batch file, an unknown symbol)."""
    for a in axes:
        if a == "batch" and info.batch_symbol() is None and not info.zoo:
            shape = "x".join(map(str, info.inputs[0][1])) if info.inputs else "no inputs"
            raise DispatchError(f"[sweep] models: '{label}' fixes its batch dimension (first input {shape}), "
                                "so axis 'batch' cannot bind it; export it with a symbolic first dimension.")
        if a.startswith("shape.") and a[6:] not in info.symbols:
            raise DispatchError(f"Axis '{a}' names symbol '{a[6:]}', which model '{label}' does not have; "
                                f"its symbols are {sorted(info.symbols) or 'none'}.")


def batch_model(name: str) -> str:
    """Path of zoo model `name` exported with a symbolic batch dimension (built once, then cached)."""
    from models.zoo import OPSET, cache_dir, cache_key, get_entry

    entry = get_entry(name)
    folder = cache_dir() / "sweep"
    path = folder / f"{name}-batch-{cache_key(name)}.onnx"
    if path.exists():
        return str(path)
    import torch

    module, args = entry.builder()
    buf = io.BytesIO()
    dyn = {n: {0: _SYMBOL} for n in (*entry.input_names, *entry.output_names)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                          input_names=list(entry.input_names), output_names=list(entry.output_names),
                          dynamic_axes=dyn)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)


def bindings(info: ModelInfo, values: Mapping[str, Any]) -> tuple[str, dict[str, int]]:
    """(the model to load, shape bindings) for a point: batch and shape.SYMBOL values."""
    ref = info.ref
    shapes = {k[6:]: int(v) for k, v in values.items() if k.startswith("shape.")}
    if "batch" in values:
        sym = info.batch_symbol()
        if sym is None:  # a zoo model with a fixed batch (check_binding refused files)
            ref, sym = batch_model(info.ref), _SYMBOL
        shapes[sym] = int(values["batch"])
    return ref, shapes


class GraphCache:
    """Loaded and analysed graphs, the `size` most recently used kept (a BERT graph holds its weights)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._graphs: OrderedDict[tuple[str, tuple[tuple[str, int], ...]], tuple[Any, list]] = OrderedDict()
        self.loads = 0
        self.load_s = 0.0  # seconds spent loading and analysing (wall clock)
        self.load_cpu_s = 0.0  # and of this process's CPU time
        self.evicted: list[tuple[str, tuple[tuple[str, int], ...]]] = []

    def get(self, ref: str, shapes: Mapping[str, int]) -> tuple[tuple[str, tuple], Any, list]:
        from dispatch.analysis import analyze
        from dispatch.frontend import load

        key = (ref, tuple(sorted(shapes.items())))
        hit = self._graphs.get(key)
        if hit is None:
            while len(self._graphs) >= self.size:
                old, _ = self._graphs.popitem(last=False)
                self.evicted.append(old)
            t0, c0 = time.perf_counter(), time.process_time()
            g = load(ref, shapes or None)
            hit = self._graphs[key] = (g, analyze(g))
            self.loads += 1
            self.load_s += time.perf_counter() - t0
            self.load_cpu_s += time.process_time() - c0
        self._graphs.move_to_end(key)
        return key, hit[0], hit[1]


def model_label(ref: str) -> str:
    """The name a row shows: the zoo name, or the file's stem."""
    return Path(ref).stem if (ref.endswith(".onnx") or "/" in ref) else ref
