"""The zoo table, ONNX export with an on-disk cache, example feeds and an independent torch MAC count.

torch is imported only inside functions, so importing this module stays cheap for code that only needs
names, input specs or cached files.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dispatch.errors import DispatchError

__all__ = [
    "ZOO", "VARIANTS", "ZOO_VERSION", "SEED", "OPSET", "InputSpec", "ZooEntry", "list_models", "is_zoo_name",
    "get_entry", "cache_dir", "cache_key", "build", "example_inputs", "torch_macs", "param_count",
]

ZOO_VERSION = 1  # bump to invalidate every cached export (the key also hashes this package's source)
SEED = 0  # torch.manual_seed for weights, numpy default_rng for example feeds
OPSET = 17
_KEY_PROP = "dispatch.zoo.key"  # metadata_props entry holding the cache key
_SOURCES = ("zoo.py", "cnn.py", "transformer.py")  # files whose content defines the exported graphs
_VARIANT_SOURCES = ("quantize.py",)  # and, for a reduced-precision variant, the file that converts it


@dataclass(frozen=True)
class InputSpec:
    """One graph input: name, static example shape, dtype, and for int64 ids the exclusive upper bound."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "float16" or "int64"
    high: int = 0  # token ids are drawn from [0, high)


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: ``builder()`` returns (torch.nn.Module in eval mode, example input tensors).

    ``factory()`` only constructs the module (no seeding, no inputs); ``param_count`` calls it on the meta
    device. A variant (``base`` set) is the base model's export converted by ``models.quantize`` (``variant``
    names how); its builder and factory are the base's, so MAC and parameter counts are the base's.
    """

    name: str
    description: str
    builder: Callable[[], tuple[Any, tuple[Any, ...]]]
    factory: Callable[[], Any]
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict, hash=False)
    base: str = ""
    variant: str = ""

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)


# Factories import torch lazily; each returns a freshly initialised module.
def _mlp() -> Any:
    from models.cnn import MLP
    return MLP()


def _resnet18() -> Any:
    from models.cnn import resnet18
    return resnet18()


def _resnet50() -> Any:
    from models.cnn import resnet50
    return resnet50()


def _mobilenet_v2() -> Any:
    from models.cnn import MobileNetV2
    return MobileNetV2()


def _tiny_cnn() -> Any:
    from models.cnn import TinyCNN
    return TinyCNN()


def _bert() -> Any:
    from models.transformer import BERT_BASE, Transformer
    return Transformer(BERT_BASE)


def _gpt2() -> Any:
    from models.transformer import GPT2_SMALL, Transformer
    return Transformer(GPT2_SMALL)


def _tiny_transformer() -> Any:
    from models.transformer import TINY, Transformer
    return Transformer(TINY)


def _feeds(inputs: tuple[InputSpec, ...]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        if spec.dtype == "int64":
            feeds[spec.name] = rng.integers(0, spec.high, size=spec.shape, dtype=np.int64)
        else:
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return feeds


def _build_module(factory: Callable[[], Any], inputs: tuple[InputSpec, ...]) -> tuple[Any, tuple[Any, ...]]:
    import torch

    torch.manual_seed(SEED)
    module = factory().eval()
    feeds = _feeds(inputs)
    return module, tuple(torch.from_numpy(feeds[spec.name]) for spec in inputs)


def _entry(name: str, description: str, factory: Callable[[], Any], inputs: tuple[InputSpec, ...],
           outputs: tuple[str, ...], dynamic_axes: Mapping[str, Mapping[int, str]] | None = None) -> ZooEntry:
    builder = functools.partial(_build_module, factory, inputs)
    return ZooEntry(name, description, builder, factory, inputs, outputs, dict(dynamic_axes or {}))


_IMAGE = (InputSpec("input", (1, 3, 224, 224), "float32"),)
_SEQ = 128
ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    _entry("mlp", "MLP 784-512-256-10 with ReLU, batch 1", _mlp,
           (InputSpec("input", (1, 784), "float32"),), ("output",)),
    _entry("resnet18", "ResNet-18 (basic blocks 2-2-2-2), ImageNet 1x3x224x224", _resnet18,
           _IMAGE, ("output",)),
    _entry("resnet50", "ResNet-50 v1.5 (bottlenecks 3-4-6-3), ImageNet 1x3x224x224", _resnet50,
           _IMAGE, ("output",)),
    _entry("mobilenet_v2", "MobileNetV2 width 1.0, ImageNet 1x3x224x224", _mobilenet_v2,
           _IMAGE, ("output",)),
    _entry("bert", "BERT-base encoder (12 layers, hidden 768, 12 heads), sequence 128, no heads", _bert,
           (InputSpec("input_ids", (1, _SEQ), "int64", 30522),), ("last_hidden_state",)),
    _entry("gpt2", "GPT-2 small decoder (12 layers, hidden 768, causal), sequence 128, no LM head", _gpt2,
           (InputSpec("input_ids", (1, _SEQ), "int64", 50257),), ("last_hidden_state",)),
    _entry("tiny_cnn", "Tiny CNN for tests, Nx3x32x32 with a symbolic batch dimension", _tiny_cnn,
           (InputSpec("input", (1, 3, 32, 32), "float32"),), ("output",),
           {"input": {0: "batch"}, "output": {0: "batch"}}),
    _entry("tiny_transformer", "Tiny causal transformer for tests (2 layers, hidden 32), sequence 16",
           _tiny_transformer, (InputSpec("input_ids", (1, 16), "int64", 128),), ("last_hidden_state",)),
)}


def _variant(base: str, suffix: str, kind: str, what: str) -> ZooEntry:
    b = ZOO[base]
    dtype = "float16" if kind == "fp16" else None
    inputs = tuple(InputSpec(i.name, i.shape, dtype if dtype and i.dtype == "float32" else i.dtype, i.high)
                   for i in b.inputs)
    return ZooEntry(f"{base}-{suffix}", f"{b.description}; {what}", b.builder, b.factory, inputs,
                    b.output_names, b.dynamic_axes, base=base, variant=kind)


_QSTATIC = ("int8 by onnxruntime quantize_static (MinMax on 4 random samples, per-channel 7-bit weights, "
            "uint8 activations)")
# Reduced-precision variants (models/quantize.py), built from the base model's cached export.
VARIANTS: dict[str, ZooEntry] = {e.name: e for e in (
    _variant("resnet50", "int8", "qoperator", f"{_QSTATIC}, operator form (QLinearConv)"),
    _variant("resnet50", "qdq", "qdq", f"{_QSTATIC}, QDQ form"),
    _variant("resnet50", "fp16", "fp16", "float16 weights and activations"),
    _variant("bert", "int8", "dynamic", "int8 by onnxruntime quantize_dynamic (MatMulInteger, 7-bit "
             "weights)"),
    _variant("bert", "fp16", "fp16", "float16 weights and activations"),
    _variant("tiny_cnn", "int8", "qoperator", f"{_QSTATIC}, operator form (QLinearConv)"),
    _variant("tiny_cnn", "qdq", "qdq", f"{_QSTATIC}, QDQ form"),
    _variant("tiny_cnn", "fp16", "fp16", "float16 weights and activations"),
    _variant("tiny_transformer", "int8", "dynamic", "int8 by onnxruntime quantize_dynamic (MatMulInteger)"),
)}


def list_models() -> list[str]:
    """Zoo names in table order, then the reduced-precision variants."""
    return [*ZOO, *VARIANTS]


def is_zoo_name(name: str) -> bool:
    """True when ``name`` is a zoo model name (not a path)."""
    return name in ZOO or name in VARIANTS


def get_entry(name: str) -> ZooEntry:
    """The zoo entry for ``name``; DispatchError naming the valid names otherwise."""
    entry = ZOO.get(name) or VARIANTS.get(name)
    if entry is None:
        raise DispatchError(f"Unknown zoo model {name!r}; choose one of: {', '.join(list_models())}.")
    return entry


def cache_dir(out_dir: str | os.PathLike[str] | None = None) -> Path:
    """``out_dir``, else ``$DISPATCH_CACHE``, else ``~/.cache/dispatch/models``."""
    if out_dir is not None:
        return Path(out_dir)
    env = os.environ.get("DISPATCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dispatch" / "models"


@functools.cache
def cache_key(name: str) -> str:
    """Hash of the zoo version, the model name and the source files that define the exported graph."""
    entry = get_entry(name)
    digest = hashlib.sha256(f"{ZOO_VERSION}:{name}:{OPSET}:{entry.base}:{entry.variant}".encode())
    here = Path(__file__).parent
    for source in _SOURCES + (_VARIANT_SOURCES if entry.base else ()):
        digest.update((here / source).read_bytes())
    return digest.hexdigest()[:16]


# (path, mtime_ns, size) → key read from that file's metadata, so a large file is parsed once per process.
_seen_keys: dict[tuple[str, int, int], str | None] = {}


def _stored_key(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:  # missing, or a parent is not a folder (build reports that when it writes)
        return None
    stamp = (str(path), st.st_mtime_ns, st.st_size)
    if stamp not in _seen_keys:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # a corrupt or foreign file is simply rebuilt
            _seen_keys[stamp] = None
        else:
            props = {p.key: p.value for p in model.metadata_props}
            _seen_keys[stamp] = props.get(_KEY_PROP)
    return _seen_keys[stamp]


def _convert(entry: ZooEntry, out_dir: str | os.PathLike[str] | None) -> bytes:
    """The variant's ONNX bytes: its base model built (or taken from the cache) and converted."""
    import onnx

    from models.quantize import make_variant

    base = build(entry.base, out_dir)
    specs = entry.inputs

    def feeds(i: int) -> dict[str, np.ndarray]:  # calibration sample i: example distribution, seed SEED + i
        rng = np.random.default_rng(SEED + i)
        return {s.name: rng.integers(0, s.high, size=s.shape, dtype=np.int64) if s.dtype == "int64"
                else rng.standard_normal(s.shape).astype(np.float32) for s in specs}

    model = make_variant(base, entry.variant, feeds)
    model.doc_string = entry.description
    model.producer_name = "dispatch.models"
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {_KEY_PROP: cache_key(entry.name), "dispatch.zoo.name": entry.name})
    return model.SerializeToString()


def _export(entry: ZooEntry) -> bytes:
    """Export the entry's module with the TorchScript exporter; return the ONNX bytes, cache key included."""
    import onnx
    import torch

    module, args = entry.builder()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module, args, buffer, dynamo=False, opset_version=OPSET, do_constant_folding=True,
            input_names=list(entry.input_names), output_names=list(entry.output_names),
            dynamic_axes={k: dict(v) for k, v in entry.dynamic_axes.items()} or None,
        )
    model = onnx.load_from_string(buffer.getvalue())
    model.doc_string = entry.description
    model.producer_name = "dispatch.models"
    onnx.helper.set_model_props(model, {_KEY_PROP: cache_key(entry.name), "dispatch.zoo.name": entry.name})
    return model.SerializeToString()


def build(name: str, out_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Export zoo model ``name`` to ``<cache>/<name>.onnx`` and return the path.

    An existing file is reused when its stored cache key matches (same zoo version and source); otherwise,
    or with ``force``, it is rebuilt and written atomically (temporary file + os.replace) so that parallel
    processes never read a half-written model.
    """
    entry = get_entry(name)
    directory = cache_dir(out_dir)
    path = directory / f"{name}.onnx"
    if not force and _stored_key(path) == cache_key(name):
        return path
    data = _convert(entry, out_dir) if entry.base else _export(entry)
    return write_cached(path, data, "pass a writable folder as out_dir/--out or set DISPATCH_CACHE")


def write_cached(path: Path, data: bytes, advice: str) -> Path:
    """Write a built model to the cache atomically (temporary file + os.replace), so that parallel processes
    never read a half-written model; `advice` ends the sentence when the folder is not writable."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # A unique name per writer; open(..., "xb") keeps the umask's permissions, unlike tempfile.mkstemp.
        tmp = directory / f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise DispatchError(f"Cannot write the model to folder {str(directory)!r} ({exc.strerror}); "
                            f"{advice}.") from None
    return path


def example_inputs(name: str) -> dict[str, np.ndarray]:
    """Numpy feeds matching the ONNX inputs (fixed seed; int64 token ids within the vocabulary)."""
    return _feeds(get_entry(name).inputs)


# FlopCounterMode (torch/utils/flop_counter.py) registers formulas for matmul-like ops (mm, addmm, bmm,
# baddbmm, _scaled_mm), convolutions and fused attention kernels, each as 2 × output size × reduction length
# with biases ignored (addmm counts as mm; conv uses the weight's in_channels/groups, so grouped and
# depthwise convolutions are exact). Element-wise ops, norms and softmax are not counted. The zoo uses none
# of the fused attention ops, so we sum exactly these and fail loudly if anything else shows up.
_COUNTED_OPS = frozenset({"aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm", "aten.convolution",
                          "aten._convolution"})


@functools.cache
def torch_macs(name: str) -> int:
    """MACs of the zoo module counted by torch's FlopCounterMode on the example inputs (FLOPs / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module, args = get_entry(name).builder()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args)
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    unexpected = set(counts) - _COUNTED_OPS
    if unexpected:
        raise RuntimeError(f"FlopCounterMode counted unexpected ops {sorted(unexpected)} for {name}.")
    total = sum(counts.values())
    if total % 2:
        raise RuntimeError(f"FlopCounterMode returned an odd FLOP count {total} for {name}.")
    return total // 2


@functools.cache
def param_count(name: str) -> int:
    """Number of parameters of the zoo module (built on the meta device, so no weights are allocated)."""
    import torch

    with torch.device("meta"):
        module = get_entry(name).factory()
    return sum(p.numel() for p in module.parameters())
