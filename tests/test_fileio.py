"""Atomic outputs: a failed write leaves the earlier file intact and no partial file; outputs never overwrite
what the run reads."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest
from test_cli import _bad
from test_report import tiny_model

from dispatch.cli import main
from dispatch.errors import DispatchError
from dispatch.fileio import atomic_output, same_file, write_text

ROOT = Path(__file__).resolve().parents[1]


def test_write_replaces_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "out.json"
    p.write_text("old contents that are longer than the new ones")
    write_text(p, "new")
    assert p.read_text() == "new"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.json"]


def test_error_inside_the_writer_keeps_the_earlier_file(tmp_path: Path) -> None:
    p = tmp_path / "out.bin"
    p.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_output(p) as f:
        f.write(b"half")
        raise RuntimeError("writer failed half way")
    assert p.read_bytes() == b"good"
    assert [x.name for x in tmp_path.iterdir()] == ["out.bin"]


def test_unwritable_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(DispatchError, match=r"Cannot write the report to '.*missing.*out.json'"):
        write_text(tmp_path / "missing" / "out.json", "{}", "the report")


def test_permissions_of_an_existing_file_are_kept(tmp_path: Path) -> None:
    p = tmp_path / "out.txt"
    p.write_text("a")
    p.chmod(0o640)
    write_text(p, "b")
    assert p.stat().st_mode & 0o777 == 0o640


def test_same_file() -> None:
    assert same_file(ROOT / "README.md", ROOT / "tests" / ".." / "README.md")
    assert not same_file(ROOT / "README.md", ROOT / "pyproject.toml")
    assert not same_file(ROOT / "no-such-file-a", ROOT / "no-such-file-b")


# Disk full, simulated: RLIMIT_FSIZE caps the bytes a child may write to one file, so a write past it fails
# with EFBIG half way (SIGXFSZ ignored). Every writer must then leave the earlier file byte for byte.
_CHILD = textwrap.dedent("""
    import signal, resource, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
    from dispatch.cli import main
    sys.exit(main(sys.argv[2:]))
""")

WRITERS = ["--json", "--trace", "--dot", "--annotate", "--save-plan", "--outputs"]


@pytest.mark.parametrize("flag", WRITERS)
def test_disk_full_keeps_the_earlier_file(flag: str, tmp_path: Path) -> None:
    model = tmp_path / "tiny4.onnx"
    onnx.save(tiny_model(), str(model))
    out = tmp_path / ("out.npz" if flag == "--outputs" else "out.dat")
    earlier = b"the earlier good file\n"
    out.write_bytes(earlier)
    # 64 bytes: more than nothing, less than any of the outputs (the smallest, the plan, is ~1 kB)
    limit = 64
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(limit), str(model), "--repeat", "0",
                           "--quiet", flag, str(out)], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Cannot write"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.read_bytes() == earlier
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(["tiny4.onnx", out.name]), \
        "no temporary or partial file is left"
    assert resource.getrlimit(resource.RLIMIT_FSIZE)  # the limit applied to the child only


@pytest.mark.parametrize("flag", WRITERS)
def test_output_over_the_model_is_refused(flag: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "tiny4.onnx"
    onnx.save(tiny_model(), str(model))
    before = model.read_bytes()
    msg = _bad(capsys, [str(model), "--no-run" if flag != "--outputs" else "--repeat=0", flag, str(model)])
    assert "would overwrite" in msg and "tiny4.onnx" in msg
    assert model.read_bytes() == before


def test_output_over_the_inputs_or_plan_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "tiny4.onnx"
    onnx.save(tiny_model(), str(model))
    plan = tmp_path / "plan.json"
    assert main([str(model), "--no-run", "--quiet", "--save-plan", str(plan)]) == 0
    saved = json.loads(plan.read_text())
    msg = _bad(capsys, [str(model), "--no-run", "--load-plan", str(plan), "--json", str(plan)])
    assert "would overwrite" in msg
    assert json.loads(plan.read_text()) == saved


def test_two_outputs_on_one_path_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "tiny4.onnx"
    onnx.save(tiny_model(), str(model))
    out = tmp_path / "same.json"
    msg = _bad(capsys, [str(model), "--no-run", "--json", str(out), "--trace", str(out)])
    assert "both write" in msg
    assert not out.exists()
