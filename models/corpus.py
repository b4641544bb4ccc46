"""A corpus of public architectures nobody here wrote: torchvision, timm and Hugging Face transformers modules
(plus torch's own LSTM/GRU and two detection heads), built with random weights from a fixed seed, exported to
ONNX and cached like the zoo.

Nothing is downloaded: every module is constructed from code (``weights=None``, ``pretrained=False``, HF
``from_config``). The transformers use small configs (fewer layers, narrower) and sequence 32 so that the
whole corpus exports, plans, runs and validates in minutes on two cores; each description says how it
differs from the published size. Install the libraries with ``pip install -e '.[corpus]'``.

Export is the TorchScript exporter (``dynamo=False``) at opset 17 (one entry at 21), as the zoo's; the dynamo
exporter needs onnxscript, which the project does not install. torch is imported lazily.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch.errors import DispatchError
from models.zoo import OPSET, InputSpec

__all__ = ["CORPUS", "CORPUS_VERSION", "CorpusEntry", "list_corpus", "get_corpus_entry", "require_libraries",
           "library_versions"]

CORPUS_VERSION = 1  # bump to invalidate every cached corpus export
_LIBRARIES = ("torch", "torchvision", "timm", "transformers")


@dataclass(frozen=True)
class CorpusEntry:
    """One architecture: ``factory()`` builds the torch module (random weights); ``exercises`` names what it
    brings that the zoo does not (operators, layouts) so a failure reads as a feature."""

    name: str
    library: str  # the package the architecture comes from
    description: str
    exercises: str
    factory: Callable[[], Any]
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]
    dynamic_axes: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = ()  # (tensor, ((axis, symbol), ...))
    opset: int = OPSET

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)


# -- torchvision -------------------------------------------------------------------------------------------
def _torchvision() -> Any:
    """Import torchvision; when its C++ ops cannot load, first define the two op schemas its import needs.

    torchvision's wheels on PyPI are linked against CUDA torch (libtorch_cuda.so), so with torch+cpu its _C
    extension fails to load and ``import torchvision`` stops in _meta_registrations at
    ``register_fake("torchvision::nms")``. The models need none of those ops; the NMS head gets a plain
    torch kernel (`_nms_kernel`) for torchvision::nms, which torchvision's own ONNX symbolic exports as
    NonMaxSuppression.
    """
    import torch

    if not hasattr(_torchvision, "_lib"):
        _torchvision._lib = None  # type: ignore[attr-defined]
        try:
            torch.ops.torchvision.nms  # noqa: B018  (the extension is already loaded)
        except (AttributeError, RuntimeError):
            from importlib.util import find_spec

            spec = find_spec("torchvision")
            so = Path(spec.origin).parent / "_C.so" if spec and spec.origin else None
            try:
                if so is None:
                    raise OSError("torchvision is not installed")
                torch.ops.load_library(str(so))
            except (OSError, RuntimeError):
                lib = torch.library.Library("torchvision", "DEF")
                lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                lib.impl("nms", _nms_kernel, "CPU")
                _torchvision._lib = lib  # type: ignore[attr-defined]  # keep the registration alive
    import torchvision

    return torchvision


def _nms_kernel(dets: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy NMS as torchvision's CPU kernel does it: by descending score, drop boxes whose IoU with a kept
    box exceeds the threshold; returns kept indices (int64) in descending score order."""
    import torch

    order = torch.argsort(scores, descending=True, stable=True)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def _tv(name: str, **kwargs: Any) -> Callable[[], Any]:
    def make() -> Any:
        return getattr(_torchvision().models, name)(weights=None, **kwargs)
    return make


def _lraspp() -> Any:
    from torch import nn

    model = _torchvision().models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)

    class Segmentation(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return self.model(x)["out"]

    return Segmentation()


def _tv_vit() -> Any:
    from torchvision.models.vision_transformer import VisionTransformer

    _torchvision()
    return VisionTransformer(image_size=224, patch_size=16, num_layers=4, num_heads=3, hidden_dim=192,
                             mlp_dim=768, num_classes=1000)


# -- timm --------------------------------------------------------------------------------------------------
def _timm(name: str, **kwargs: Any) -> Callable[[], Any]:
    def make() -> Any:
        _torchvision()  # timm imports torchvision
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)
    return make


# -- Hugging Face transformers -----------------------------------------------------------------------------
def _hf_outputs(model: Any, keys: tuple[str, ...]) -> Any:
    """Wrap a transformers model so that forward returns plain tensors (the named ModelOutput fields).

    The attention mask is passed as ones: without one, transformers 5 looks for packed sequences in the
    position ids with torch.diff, which the TorchScript exporter cannot export (aten::diff).
    """
    import torch
    from torch import nn

    class Outputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any) -> Any:
            out = self.model(input_ids, attention_mask=torch.ones_like(input_ids), return_dict=True)
            return tuple(out[k] for k in keys)

    return Outputs()


def _bert() -> Any:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                     attn_implementation="eager")
    return _hf_outputs(BertModel(cfg), ("last_hidden_state", "pooler_output"))


def _gpt2() -> Any:
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(n_embd=256, n_layer=4, n_head=4, n_positions=128, attn_implementation="eager",
                     use_cache=False)
    return _hf_outputs(GPT2Model(cfg), ("last_hidden_state",))


def _whisper_encoder() -> Any:
    from torch import nn
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = WhisperConfig(d_model=256, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=1024,
                        num_mel_bins=80, max_source_positions=100, attn_implementation="eager")
    encoder = WhisperEncoder(cfg)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, features: Any) -> Any:
            return self.encoder(features, return_dict=True).last_hidden_state

    return Encoder()


def _t5() -> Any:
    from transformers import T5Config, T5Model

    cfg = T5Config(d_model=256, d_kv=64, d_ff=1024, num_layers=2, num_decoder_layers=2, num_heads=4,
                   attn_implementation="eager", use_cache=False)
    model = T5Model(cfg)

    from torch import nn

    class EncoderDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, decoder_input_ids: Any) -> Any:
            out = self.model(input_ids=input_ids, decoder_input_ids=decoder_input_ids, return_dict=True)
            return out.last_hidden_state, out.encoder_last_hidden_state

    return EncoderDecoder()


# -- torch modules: recurrent nets and detection heads -----------------------------------------------------
def _lstm() -> Any:
    from torch import nn

    class LSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(64, 128, num_layers=2, batch_first=True)

        def forward(self, x: Any) -> Any:
            return self.rnn(x)[0]

    return LSTM()


def _gru() -> Any:
    from torch import nn

    class GRU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(64, 96, batch_first=True, bidirectional=True)

        def forward(self, x: Any) -> Any:
            return self.rnn(x)[0]

    return GRU()


def _detector(nms: bool) -> Callable[[], Any]:
    """A single-level anchor head on a small conv backbone: 3 anchors per cell of a 16×16 map, box deltas
    decoded against the anchors, TopK (k=100) by best class score, then (nms=True) torchvision.ops.nms."""

    def make() -> Any:
        import torch
        from torch import nn

        class Detector(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                chans = (3, 32, 64, 128)
                self.backbone = nn.Sequential(*(m for a, b in zip(chans, chans[1:], strict=False) for m in (
                    nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU())))
                self.cls = nn.Conv2d(128, 3 * 8, 3, padding=1)  # 3 anchors × 8 classes
                self.box = nn.Conv2d(128, 3 * 4, 3, padding=1)
                cy, cx = torch.meshgrid(torch.arange(16.0) + 0.5, torch.arange(16.0) + 0.5, indexing="ij")
                centers = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, 3, 2) * 8.0
                sizes = torch.tensor([16.0, 32.0, 64.0]).reshape(1, 3, 1).expand(256, 3, 2)
                self.register_buffer("anchors", torch.cat([centers, sizes], -1).reshape(-1, 4))

            def forward(self, x: Any) -> Any:
                f = self.backbone(x)
                scores = self.cls(f).permute(0, 2, 3, 1).reshape(-1, 8).sigmoid()
                d = self.box(f).permute(0, 2, 3, 1).reshape(-1, 4)
                a = self.anchors
                ctr = a[:, :2] + d[:, :2] * a[:, 2:]
                size = a[:, 2:] * torch.exp(d[:, 2:].clamp(max=4.0))
                boxes = torch.cat([ctr - size / 2, ctr + size / 2], 1)
                best, _ = scores.max(1)
                top, idx = torch.topk(best, 100)
                boxes = boxes[idx]
                if not nms:
                    return boxes, top
                # torchvision.ops.nms(boxes, top, 0.5) is this op behind a check that the C++ ops loaded
                _torchvision()
                keep = torch.ops.torchvision.nms(boxes, top, 0.5)
                return boxes[keep], top[keep]

        return Detector()

    return make


_IMG = (InputSpec("input", (1, 3, 224, 224), "float32"),)
_SEQ = 32
CORPUS: dict[str, CorpusEntry] = {e.name: e for e in (
    CorpusEntry("mobilenet_v3_small", "torchvision", "MobileNetV3-Small, 1x3x224x224",
                "HardSwish, HardSigmoid, squeeze-excite, depthwise convs",
                _tv("mobilenet_v3_small"), _IMG, ("output",)),
    CorpusEntry("efficientnet_b0", "torchvision", "EfficientNet-B0, 1x3x224x224",
                "SiLU (Sigmoid·Mul), squeeze-excite, depthwise convs", _tv("efficientnet_b0"), _IMG,
                ("output",)),
    CorpusEntry("convnext_tiny", "torchvision", "ConvNeXt-T, 1x3x160x160 (224 published)",
                "GELU (Erf), LayerNorm over channels-last, depthwise 7x7, layer scale",
                _tv("convnext_tiny"), (InputSpec("input", (1, 3, 160, 160), "float32"),), ("output",)),
    CorpusEntry("regnet_y_400mf", "torchvision", "RegNetY-400MF, 1x3x224x224",
                "grouped convs (group width 8), squeeze-excite", _tv("regnet_y_400mf"), _IMG, ("output",)),
    CorpusEntry("resnext50_32x4d", "torchvision", "ResNeXt-50 32x4d, 1x3x160x160 (224 published)",
                "grouped 3x3 convs (32 groups)", _tv("resnext50_32x4d"),
                (InputSpec("input", (1, 3, 160, 160), "float32"),), ("output",)),
    CorpusEntry("shufflenet_v2", "torchvision", "ShuffleNetV2 x1.0, 1x3x224x224",
                "channel shuffle (Reshape/Transpose), Split, depthwise convs",
                _tv("shufflenet_v2_x1_0"), _IMG, ("output",)),
    CorpusEntry("lraspp", "torchvision", "LR-ASPP segmentation on MobileNetV3-Large (21 classes), "
                "1x3x224x224", "bilinear Resize (upsampling to the input size), global-pool gating branch, "
                "dilated depthwise convs", _lraspp, _IMG, ("output",)),
    CorpusEntry("tv_vit", "torchvision", "torchvision VisionTransformer at ViT-Ti width (hidden 192, 3 "
                "heads, MLP 768), 4 layers instead of 12, patch 16, 1x3x224x224",
                "nn.MultiheadAttention, class-token pooling x[:, 0] (Gather with a scalar index) before Gemm",
                _tv_vit, _IMG, ("output",)),
    CorpusEntry("tv_vit_opset21", "torchvision", "the tv_vit entry exported at opset 21, the newest the "
                "TorchScript exporter writes", "Gelu as one op (opset 20), opset-21 Cast/Reshape/Shape",
                _tv_vit, _IMG, ("output",), opset=21),
    CorpusEntry("vit_tiny", "timm", "timm vit_tiny_patch16_224 (12 layers, hidden 192), 1x3x224x224",
                "attention as MatMul/Softmax, GELU, class-token pooling", _timm("vit_tiny_patch16_224"),
                _IMG, ("output",)),
    CorpusEntry("swin", "timm", "timm Swin-T layout (depths 2-2-6-2, window 7) at half width (embed 48, "
                "heads 2-4-8-16), 1x3x224x224", "shifted windows (Roll, window partition Reshape/Transpose), "
                "relative position bias, patch merging",
                _timm("swin_tiny_patch4_window7_224", embed_dim=48, num_heads=(2, 4, 8, 16)), _IMG,
                ("output",)),
    CorpusEntry("efficientvit_b0", "timm", "timm EfficientViT-B0 (MIT), 1x3x224x224",
                "HardSwish, ReLU linear attention, multi-scale depthwise aggregation",
                _timm("efficientvit_b0"), _IMG, ("output",)),
    CorpusEntry("bert", "transformers", f"HF BertModel, 4 layers of hidden 256 (4 heads, FFN 1024) instead "
                f"of 12 of 768, sequence {_SEQ}", "erf GELU, token-type embeddings, extended attention mask, "
                "pooler x[:, 0] -> Linear -> Tanh", _bert,
                (InputSpec("input_ids", (1, _SEQ), "int64", 30522),), ("last_hidden_state", "pooler_output")),
    CorpusEntry("bert_dynamic", "transformers", "the bert entry exported with symbolic batch and sequence "
                "(as HF exports are), run at batch 2, sequence 24",
                "symbolic dimensions bound at load, Shape-derived masks and positions", _bert,
                (InputSpec("input_ids", (2, 24), "int64", 30522),), ("last_hidden_state", "pooler_output"),
                (("input_ids", ((0, "batch"), (1, "sequence"))),
                 ("last_hidden_state", ((0, "batch"), (1, "sequence"))), ("pooler_output", ((0, "batch"),)))),
    CorpusEntry("gpt2", "transformers", f"HF GPT2Model, 4 layers of hidden 256 (4 heads) instead of 12 of "
                f"768, sequence {_SEQ}", "Conv1D (addmm), tanh GELU, causal mask, pre-LayerNorm", _gpt2,
                (InputSpec("input_ids", (1, _SEQ), "int64", 50257),), ("last_hidden_state",)),
    CorpusEntry("t5", "transformers", f"HF T5Model encoder-decoder, 2+2 layers of d_model 256 (4 heads, FFN "
                f"1024) instead of 6+6 of 512, encoder sequence {_SEQ}, decoder 16",
                "RMS LayerNorm (Pow/ReduceMean/Sqrt), relative position buckets (Log, Cast, Where), "
                "cross-attention, causal decoder", _t5,
                (InputSpec("input_ids", (1, _SEQ), "int64", 32128),
                 InputSpec("decoder_input_ids", (1, 16), "int64", 32128)),
                ("last_hidden_state", "encoder_last_hidden_state")),
    CorpusEntry("whisper_encoder", "transformers", "HF WhisperEncoder, 2 layers of d_model 256 (4 heads, FFN "
                "1024) instead of 4 of 384 (tiny), 80 mel bins x 200 frames instead of 3000",
                "Conv1d (stride 2) over audio frames, GELU, sinusoidal positions", _whisper_encoder,
                (InputSpec("input_features", (1, 80, 200), "float32"),), ("last_hidden_state",)),
    CorpusEntry("lstm", "torch", f"nn.LSTM, 2 layers, input 64, hidden 128, sequence {_SEQ}",
                "ONNX LSTM", _lstm, (InputSpec("input", (1, _SEQ, 64), "float32"),), ("output",)),
    CorpusEntry("gru", "torch", f"nn.GRU, bidirectional, input 64, hidden 96, sequence {_SEQ}",
                "ONNX GRU (bidirectional)", _gru, (InputSpec("input", (1, _SEQ, 64), "float32"),),
                ("output",)),
    CorpusEntry("det_topk", "torch", "anchor detection head on a 3-conv backbone, 1x3x128x128, 768 anchors",
                "box decoding (Exp, Clip, Concat), TopK k=100, Gather of boxes", _detector(False),
                (InputSpec("input", (1, 3, 128, 128), "float32"),), ("boxes", "scores")),
    CorpusEntry("det_nms", "torchvision", "det_topk followed by torchvision.ops.nms (IoU 0.5)",
                "NonMaxSuppression with a data-dependent output length", _detector(True),
                (InputSpec("input", (1, 3, 128, 128), "float32"),), ("boxes", "scores")),
)}


def list_corpus() -> list[str]:
    return list(CORPUS)


def get_corpus_entry(name: str) -> CorpusEntry:
    try:
        return CORPUS[name]
    except KeyError:
        raise DispatchError(f"Unknown corpus model {name!r}; choose one of: {', '.join(CORPUS)}.") from None


@functools.cache
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries the corpus comes from ('missing' when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for lib in _LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "missing"
    return out


def require_libraries() -> None:
    """Import what the corpus needs (torchvision first, see `_torchvision`); DispatchError naming the
    missing libraries otherwise."""
    missing = [lib for lib, v in library_versions().items() if v == "missing"]
    if missing:
        raise DispatchError(f"The corpus needs {', '.join(missing)}; install them with "
                            "pip install -e '.[corpus]'.")
    _torchvision()  # timm and transformers import torchvision
