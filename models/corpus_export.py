"""The corpus's torch side: each entry of models/corpus.py built with seeded random weights, its inputs, its
outputs and FLOP counts in torch (the reference for every comparison), and its ONNX export, cached like the
zoo's. torch is imported lazily.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from models.corpus import CORPUS_VERSION, get_corpus_entry, library_versions, require_libraries
from models.zoo import SEED, cache_dir, write_cached

__all__ = ["build_corpus", "corpus_inputs", "torch_module", "torch_outputs", "torch_flop_counts"]

_KEY_PROP = "dispatch.corpus.key"
_SOURCES = (Path(__file__).with_name("corpus.py"), Path(__file__))  # the definitions and this exporter


@functools.cache
def _cache_key(name: str) -> str:
    """Hash of the corpus version, name, opset, the definitions, this file and the library versions."""
    versions = ",".join(f"{k}={v}" for k, v in sorted(library_versions().items()))
    digest = hashlib.sha256(f"{CORPUS_VERSION}:{name}:{get_corpus_entry(name).opset}:{versions}".encode())
    for source in _SOURCES:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def corpus_inputs(name: str) -> dict[str, np.ndarray]:
    """NumPy feeds for the entry (seed SEED; token ids within the vocabulary)."""
    rng = np.random.default_rng(SEED)
    out: dict[str, np.ndarray] = {}
    for spec in get_corpus_entry(name).inputs:
        if spec.dtype == "int64":
            out[spec.name] = rng.integers(0, spec.high, size=spec.shape, dtype=np.int64)
        else:
            out[spec.name] = rng.standard_normal(spec.shape).astype(np.float32)
    return out


def torch_module(name: str) -> Any:
    """The entry's module in eval mode, weights drawn after torch.manual_seed(SEED), made non-degenerate.

    Random weights with the libraries' own initialisation give useless outputs for some models:
    torchvision's ViT initialises its classifier to zeros (every output 0), and BatchNorm running statistics
    of (0, 1) do not match the activations of an untrained network, so MobileNetV3's logits are ~1e-9 and
    EfficientNet's ~1e-14, where any comparison passes. So a Linear or Conv whose weight is all zeros gets
    its layer's default initialisation, and the BatchNorm statistics are measured (cumulative average over
    2 forward passes in train mode, no gradient) on random inputs drawn with seed SEED + 1, as a trained
    network's would be.
    """
    import torch
    from torch import nn

    entry = get_corpus_entry(name)
    require_libraries()
    torch.manual_seed(SEED)
    module = entry.factory()
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and not m.weight.any():
            m.reset_parameters()
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        rng = np.random.default_rng(SEED + 1)
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the calibration passes
        module.train()
        with torch.no_grad():
            for _ in range(2):
                module(*(torch.from_numpy(rng.standard_normal(spec.shape).astype(np.float32))
                         for spec in entry.inputs))
    return module.eval()


def _args(name: str) -> tuple[Any, ...]:
    import torch

    feeds = corpus_inputs(name)
    return tuple(torch.from_numpy(feeds[n]) for n in get_corpus_entry(name).input_names)


def torch_outputs(name: str, module: Any | None = None) -> dict[str, np.ndarray]:
    """The source framework's outputs on corpus_inputs(name), by output name."""
    import torch

    module = torch_module(name) if module is None else module
    with torch.no_grad():
        out = module(*_args(name))
    out = out if isinstance(out, tuple) else (out,)
    return {n: t.numpy() for n, t in zip(get_corpus_entry(name).output_names, out, strict=True)}


def torch_flop_counts(name: str, module: Any | None = None) -> dict[str, int]:
    """FLOPs per aten op from torch.utils.flop_counter.FlopCounterMode on corpus_inputs(name).

    FlopCounterMode counts 2 FLOPs per multiply-add for matmul-like ops (mm, addmm, bmm, baddbmm),
    convolutions and the fused attention kernels on CUDA, biases excluded; it counts nothing else. Two CPU
    kernels have no formula and would count 0, so they are avoided while counting:
    scaled_dot_product_attention runs its math backend (aten._scaled_dot_product_flash_attention_for_cpu is
    not counted; the math backend is two bmm, which are), and a module with an RNN runs with oneDNN off (its
    fused aten.mkldnn_rnn_layer is not counted; without it aten.lstm runs as one addmm per weight matrix and
    step, which are).
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    module = torch_module(name) if module is None else module
    rnn = any(isinstance(m, torch.nn.RNNBase) for m in module.modules())
    counter = FlopCounterMode(display=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mkldnn.flags warns that its TF32 switch is deprecated
        with torch.backends.mkldnn.flags(enabled=not rnn), sdpa_kernel(SDPBackend.MATH), torch.no_grad(), \
                counter:
            module(*_args(name))
    return {str(op): int(f) for op, f in counter.get_flop_counts().get("Global", {}).items()}


def _export(name: str, module: Any) -> bytes:
    import onnx
    import torch

    entry = get_corpus_entry(name)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, _args(name), buffer, dynamo=False, opset_version=entry.opset,
                          do_constant_folding=True, input_names=list(entry.input_names),
                          output_names=list(entry.output_names),
                          dynamic_axes={t: dict(axes) for t, axes in entry.dynamic_axes} or None)
    model = onnx.load_from_string(buffer.getvalue())
    model.doc_string = entry.description
    model.producer_name = "dispatch.models.corpus"
    onnx.helper.set_model_props(model, {_KEY_PROP: _cache_key(name), "dispatch.corpus.name": name})
    return model.SerializeToString()


def _stored_key(path: Path) -> str | None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # missing, corrupt or foreign: rebuilt
        return None
    return {p.key: p.value for p in model.metadata_props}.get(_KEY_PROP)


def build_corpus(name: str, out_dir: str | os.PathLike[str] | None = None, force: bool = False,
                 module: Any | None = None) -> Path:
    """Export corpus model ``name`` to ``<cache>/corpus/<name>.onnx`` (reused while its key matches)."""
    get_corpus_entry(name)
    require_libraries()
    directory = cache_dir(out_dir) / "corpus"
    path = directory / f"{name}.onnx"
    if not force and path.exists() and _stored_key(path) == _cache_key(name):
        return path
    data = _export(name, torch_module(name) if module is None else module)
    return write_cached(path, data, "pass a writable folder or set DISPATCH_CACHE")
