"""The corpus of third-party architectures (models/corpus.py): the table, the output comparison, the NMS
kernel, and (slow) every architecture through every stage: export, load, MACs against FlopCounterMode, plan
optimal and ASIC-first, run, outputs against torch's. benchmarks/bench_corpus.py writes the same stages as a
table in benchmarks/results/corpus.md.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dispatch.errors import DispatchError
from models.__main__ import main
from models.corpus import CORPUS, get_corpus_entry, list_corpus, require_libraries
from models.corpus_check import MAC_TOLERANCE, STAGES, asic_first, check, compare, degenerate
from models.corpus_export import build_corpus

ROOT = Path(__file__).resolve().parents[1]


# -- the table ---------------------------------------------------------------------------------------------
def test_corpus_covers_what_the_issue_asks_for() -> None:
    assert len(CORPUS) >= 15 and list_corpus() == list(CORPUS)
    assert {e.library for e in CORPUS.values()} == {"torchvision", "timm", "transformers", "torch"}
    text = " ".join(e.exercises + " " + e.description for e in CORPUS.values())
    for feature in ("HardSwish", "SiLU", "GELU", "depthwise", "grouped", "attention", "shifted windows",
                    "BertModel", "GPT2Model", "T5Model", "LSTM", "GRU", "TopK", "NonMaxSuppression", "Resize",
                    "Conv1d", "symbolic"):
        assert feature in text, feature
    for e in CORPUS.values():
        assert e.inputs and e.output_names and e.description and e.exercises


def test_unknown_name_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DispatchError, match=r"Unknown corpus model 'resnet51'; choose one of: .*det_nms\.$"):
        get_corpus_entry("resnet51")
    assert main(["corpus", "resnet51"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: Unknown corpus model")


def test_cli_lists_the_corpus_without_importing_torch() -> None:
    code = ("import sys; from models.__main__ import main; main(['corpus']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[-1] == "False"
    assert len(lines) == 1 + len(CORPUS) + 1 and all(name in out.stdout for name in CORPUS)


# -- comparison against torch ------------------------------------------------------------------------------
def test_compare_tolerance_is_relative_to_the_output_scale() -> None:
    want = {"y": np.array([100.0, 1.0, -50.0], np.float32)}
    # scale 100: atol = 1e-4 · 100 = 0.01; element 0 allows 0.01 + 1e-3·100 = 0.11, element 1 0.011
    ok, err, _ = compare({"y": np.array([100.1, 1.005, -50.0])}, want)
    assert ok and err == pytest.approx(0.1 / 100, rel=1e-3)
    ok, _, detail = compare({"y": np.array([100.0, 1.02, -50.0])}, want)  # 0.02 > 0.011
    assert not ok and "1 of 3 elements" in detail
    # outputs of scale 1e-3 (softmax over 1000 classes): atol 1e-7, so an error of 1e-4 (10%) fails
    small = {"p": np.full(4, 1e-3, np.float32)}
    assert not compare({"p": np.full(4, 1.1e-3)}, small)[0]
    assert compare({"p": np.full(4, 1.0e-3 + 1e-9)}, small)[0]
    ok, _, detail = compare({"y": np.zeros(2)}, want)
    assert not ok and "shape (2,) vs torch (3,)" in detail
    ok, _, detail = compare({}, want)
    assert not ok and "y missing" in detail
    ints = {"i": np.array([3, 1, 2], np.int64)}
    assert compare({"i": np.array([3, 1, 2])}, ints)[0]
    assert "differs in 1 of 3" in compare({"i": np.array([3, 2, 2])}, ints)[2]
    assert not compare({"y": np.array([np.nan, 1.0, -50.0])}, want)[0]


def test_degenerate_reference_outputs_are_caught() -> None:
    assert degenerate({"y": np.array([[0.1, -0.3, 2.0]], np.float32), "i": np.zeros(3, np.int64)}) == ""
    assert "constant" in degenerate({"y": np.zeros((1, 1000), np.float32)})
    assert "constant" in degenerate({"y": np.full((2, 5), 0.7, np.float32)})
    assert "not finite" in degenerate({"y": np.array([1.0, np.inf], np.float32)})


def test_asic_first_is_only_asic_unless_a_strategy_of_that_name_exists() -> None:
    from dispatch.partition import STRATEGIES

    strategy, targets = asic_first({"gpu": "g", "asic": "a"})
    assert strategy == ("asic-first" if "asic-first" in STRATEGIES else "only:asic")
    assert targets == {"gpu": "g", "asic": "a"}


def test_nms_kernel_keeps_the_best_of_overlapping_boxes() -> None:
    torch = pytest.importorskip("torch")
    from models.corpus import _nms_kernel

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]],
                         dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.3, 0.8])
    # IoUs: 0–1 81/119 = 0.68 (overlap 9×9), 3–1 72/118 = 0.61 (9×8), 3–0 90/100 = 0.9 (10×9), 2 disjoint.
    # By score 1, 3, 0, 2. At 0.5: 1 kept, 3 and 0 overlap it, 2 kept.
    assert _nms_kernel(boxes, scores, 0.5).tolist() == [1, 2]
    # At 0.8: 1 kept, 3 kept (0.61), 0 dropped by 3 (0.9), 2 kept; at 0.95 nothing is dropped.
    assert _nms_kernel(boxes, scores, 0.8).tolist() == [1, 3, 2]
    assert _nms_kernel(boxes, scores, 0.95).tolist() == [1, 3, 0, 2]


def test_export_is_cached_and_rebuilt_when_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        require_libraries()
    except DispatchError as exc:
        pytest.skip(str(exc))
    import onnx

    assert main(["corpus", "gru", "--out", str(tmp_path)]) == 0
    path = tmp_path / "corpus" / "gru.onnx"
    assert capsys.readouterr().out.strip() == str(path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node].count("GRU") == 1
    assert [i.name for i in model.graph.input] == ["input"]
    inode = path.stat().st_ino
    assert build_corpus("gru", out_dir=tmp_path) == path and path.stat().st_ino == inode  # reused
    onnx.helper.set_model_props(model, {"dispatch.corpus.key": "stale"})
    onnx.save(model, str(path))
    build_corpus("gru", out_dir=tmp_path)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["dispatch.corpus.key"] != "stale" and props["dispatch.corpus.name"] == "gru"
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["gru.onnx"]  # no temporary files


def test_flop_counter_counts_cpu_attention_and_lstm() -> None:
    """FlopCounterMode counts 0 for aten._scaled_dot_product_flash_attention_for_cpu and for oneDNN's LSTM;
    torch_flop_counts runs attention on the math backend and RNNs without oneDNN so both are counted."""
    try:
        require_libraries()
    except DispatchError as exc:
        pytest.skip(str(exc))
    from models.corpus_export import torch_flop_counts

    # lstm: 2 layers, T = 32, H = 128, I = 64: 32·4·128·(64 + 128) + 32·4·128·(128 + 128) = 3,145,728 +
    # 4,194,304; gru: 2 directions, H = 96: 2·32·3·96·(64 + 96) = 2,949,120
    assert sum(torch_flop_counts("lstm").values()) // 2 == 7_340_032
    assert sum(torch_flop_counts("gru").values()) // 2 == 2_949_120
    # tv_vit, s = 197, h = 192, MLP 768, 4 layers: QKV 3·s·h·h = 21,786,624, out 7,262,208, Q·Kᵀ and ·V
    # 2·s·s·h = 14,902,656, MLP 2·s·h·768 = 58,097,664 → 102,049,152 per layer; patches 196·192·768 =
    # 28,901,376; head 192·1000
    counts = torch_flop_counts("tv_vit")
    assert sum(counts.values()) // 2 == 4 * 102_049_152 + 28_901_376 + 192_000
    assert counts["aten.bmm"] // 2 == 4 * 14_902_656  # the attention products, from the math backend


# -- every architecture, every stage -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, Any]]:
    try:
        require_libraries()
    except DispatchError as exc:
        pytest.skip(str(exc))
    from targets.base import make_target

    # exact ASIC numerics: the stages compare with torch's float32 outputs (emulation: docs/numerics.md)
    tg = {"gpu": make_target("gpu", "h100-sxm"), "asic": make_target("asic", "tpu-v4-like", numerics="exact")}
    yield tg
    for t in tg.values():
        t.close()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["optimal", "only:asic"])
def test_symbolic_export_through_the_dispatcher_at_other_shapes(targets: dict, strategy: str) -> None:
    """bert_dynamic (symbolic batch and sequence) planned once, then run at shapes it was not exported at:
    each new shape gets its own plan, and every output matches torch's on the same token ids."""
    import torch

    from dispatch import Dispatcher
    from models.corpus_export import torch_module

    module = torch_module("bert_dynamic")
    path = build_corpus("bert_dynamic", module=module)
    rng = np.random.default_rng(5)
    with Dispatcher(path, targets=targets, strategy=strategy) as d:
        for shape in ((2, 24), (1, 7), (3, 40)):
            ids = rng.integers(0, 30522, size=shape)
            with torch.no_grad():
                want = [t.numpy() for t in module(torch.from_numpy(ids))]
            names = ("last_hidden_state", "pooler_output")
            ok, _, detail = compare(d.run({"input_ids": ids}), dict(zip(names, want, strict=True)))
            assert ok, f"{shape}: {detail}"
        # the default plan (symbols bound to 1) and one per shape
        assert d.cached_signatures == [((1, 1),), ((2, 24),), ((1, 7),), ((3, 40),)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_model_every_stage(name: str, targets: dict) -> None:
    result = check(name, targets)
    failures = result.failures()
    assert not failures, f"{name}: " + " | ".join(f"{s}: {d}" for s, d in failures.items())
    assert set(result.stages) == set(STAGES)
    assert abs(result.values["macs_rel"]) <= MAC_TOLERANCE
