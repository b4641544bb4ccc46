"""The onnxruntime targets' presets: golden figures from the datasheets, and one-sentence errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dispatch.errors import DispatchError
from targets.base import load_spec, make_target
from targets.gpu import CpuTarget, DeviceModel, GpuTarget

H100 = Path(__file__).resolve().parent.parent / "targets" / "specs" / "h100-sxm.toml"


def _one_sentence(msg: str) -> None:
    assert "\n" not in msg and msg.endswith(".") and msg.count(". ") <= 1, msg


def test_h100_sxm_golden():
    spec = load_spec("h100-sxm")
    m = DeviceModel.from_spec(spec)
    assert spec.kind == "gpu"
    assert m.peak_flops["fp16"] == 989e12  # datasheet: 1,979 TFLOPS with sparsity, dense half
    assert m.peak_flops["bf16"] == 989e12
    assert m.peak_flops["tf32"] == 494.5e12  # 989 with sparsity / 2
    assert m.peak_flops["fp32"] == 67e12
    assert m.memory_bw == 3350e9  # HBM3 3.35 TB/s
    assert m.cache_bytes == 50 * 2**20  # 50 MB L2
    assert m.launch_s == pytest.approx(5e-6)
    assert spec.link.bandwidth_Bps == 64e9  # PCIe Gen5 x16: 128 GB/s both ways
    assert (spec.idle_w, spec.active_w) == (70.0, 700.0)
    assert spec.usd_per_hour == 2.99


def test_h100_pcie_and_a100_golden():
    pcie = DeviceModel.from_spec(load_spec("h100-pcie"))
    assert pcie.peak_flops["fp16"] == 756e12 and pcie.peak_flops["tf32"] == 378e12
    assert pcie.memory_bw == 2000e9
    a100_spec = load_spec("a100-sxm")
    a100 = DeviceModel.from_spec(a100_spec)
    assert a100.peak_flops["fp16"] == 312e12 and a100.peak_flops["tf32"] == 156e12
    assert a100.peak_flops["fp32"] == 19.5e12
    assert a100.memory_bw == 2039e9 and a100.cache_bytes == 40 * 2**20
    assert a100_spec.link.bandwidth_Bps == 32e9  # PCIe Gen4 x16: 64 GB/s both ways
    assert a100_spec.active_w == 400.0


def test_host_cpu_is_the_host():
    spec = load_spec("host-cpu")
    m = DeviceModel.from_spec(spec)
    assert spec.kind == "cpu"
    assert math.isinf(spec.link.bandwidth_Bps) and spec.link.cost(1 << 30).latency_s == 0.0
    assert m.peak_flops["fp32"] == pytest.approx(2 * 3.7e9 * 32)  # cores · boost clock · FLOP/cycle
    assert m.peak_flops["bf16"] == pytest.approx(2 * m.peak_flops["fp32"], rel=1e-3)
    assert m.cache_bw == 90e9 and m.memory_bw == 21e9


@pytest.mark.parametrize(
    "preset, cls",
    [("h100-sxm", GpuTarget), ("h100-pcie", GpuTarget), ("a100-sxm", GpuTarget), ("host-cpu", CpuTarget)],
)
def test_every_preset_builds_its_target(preset, cls):
    t = make_target("t", preset, profile=False)
    assert type(t) is cls and t.spec.name == preset
    assert set(t.model.classes) >= {"gemm", "conv", "elementwise", "view"}


def test_unknown_preset_lists_the_choices():
    with pytest.raises(DispatchError) as e:
        load_spec("h100-sxmm")
    _one_sentence(str(e.value))
    assert "h100-sxm" in str(e.value) and "host-cpu" in str(e.value)


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = H100.read_text()
    assert old in text
    p = tmp_path / "variant.toml"
    p.write_text(text.replace(old, new, 1))
    return p


def test_missing_key(tmp_path):
    p = _variant(tmp_path, "memory_bandwidth_GBps = 3350.0", "")
    with pytest.raises(DispatchError) as e:
        make_target("gpu", p)
    _one_sentence(str(e.value))
    assert "memory_bandwidth_GBps" in str(e.value)


def test_negative_bandwidth(tmp_path):
    p = _variant(tmp_path, "memory_bandwidth_GBps = 3350.0", "memory_bandwidth_GBps = -3350.0")
    with pytest.raises(DispatchError, match="must be positive") as e:
        make_target("gpu", p)
    _one_sentence(str(e.value))
    p = _variant(tmp_path, "bandwidth_GBps = 64.0", "bandwidth_GBps = -64.0")
    with pytest.raises(DispatchError, match="bandwidth_GBps"):
        load_spec(p)


def test_efficiency_above_one_and_missing_peak(tmp_path):
    with pytest.raises(DispatchError, match="at most 1"):
        make_target("gpu", _variant(tmp_path, "gemm = 0.70", "gemm = 1.70"))
    with pytest.raises(DispatchError, match="peak_tflops"):
        make_target("gpu", _variant(tmp_path, "fp16 = 989.0", ""))


def test_kind_mismatch(tmp_path):
    # A spec of kind gpu whose table is named [cpu]: load_spec asks for the [gpu] table.
    text = H100.read_text().replace("[gpu]", "[cpu]").replace("[gpu.", "[cpu.")
    p = tmp_path / "mismatch.toml"
    p.write_text(text)
    with pytest.raises(DispatchError, match=r"\[gpu\] table") as e:
        load_spec(p)
    _one_sentence(str(e.value))
    # An unknown kind lists the valid ones.
    p.write_text(H100.read_text().replace('kind = "gpu"', 'kind = "tpu"'))
    with pytest.raises(DispatchError, match="valid kinds are") as e:
        load_spec(p)
    assert "cpu" in str(e.value) and "gpu" in str(e.value)
    # A gpu spec given to the cpu target class names the presets.
    with pytest.raises(DispatchError, match="needs a cpu spec") as e:
        CpuTarget("cpu", load_spec("h100-sxm"))
    _one_sentence(str(e.value))
    assert "host-cpu" in str(e.value)


@pytest.mark.parametrize("module", ["targets.base", "targets.gpu", "targets.asic.target", "dispatch.plan"])
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    # regression: `import targets.base` as a program's first import failed with a circular ImportError
    # (targets.base -> dispatch.cost -> dispatch/__init__ -> api -> plan -> problem -> targets.base)
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=root, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
