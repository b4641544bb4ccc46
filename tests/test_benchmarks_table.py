"""The README's benchmark table is generated from benchmark results alone (benchmarks/readme_table.py)."""

from __future__ import annotations

import json

import pytest

from benchmarks import readme_table
from benchmarks.__main__ import BENCHES, tables, write_readme

# Small result files, each cut from the shape its benchmark writes (benchmarks/results/NAME.md).
FIXTURES = {
    "load": "| model | nodes | total |\n|---|---:|---:|\n| synthetic 10000 | 10000 | **0.43** |\n"
            "| synthetic 50000 | 50000 | **3.34** |\n| bert | 495 | **1.02** |\n",
    "kernels": "- numpy, 1 threads (OPENBLAS_NUM_THREADS=1)\n\n| network | class | layers | ratio |\n"
               "|---|---|---:|---:|\n| bert | **all** | 8 | 0.91 |\n| all | **all** | 113 | 0.82 |\n",
    "calibration": "Goal: |error| ≤ 20% for every model: met for 2 of 2.\n\n| model | error |\n|---|---:|\n"
                   "| mlp | -5.9% |\n| resnet50 | -16.5% |\n",
    "serve": "| backend | clients | vs baseline | RSS start -> end (max), MiB |\n|---|---|---|---|\n"
             "| onnxruntime session | 1 | 1.00x | 97 -> 97 (97) |\n"
             "| dispatch | 1 | 0.93x | 154 -> 154 (154) |\n\n"
             "Errors: 0 in 20000 requests.\n",
    "scalesim": "........ [100%]\n74 passed, 45 deselected in 0.93s\n",
    # the sweep benchmark also writes its own sweep.json (not a run record): the markdown is still read
    "sweep": "- 240 points x 3 strategies x 2 objectives = 1440 rows over resnet50, bert, mobilenet_v2\n"
             "- caching alone: 23.0 s / 6.9 s = **3.34x** (derived); CPU time 22.9 s / 6.2 s = **3.69x**\n"
             "- rows identical across the sweep runs: **yes** (...)\n"
             "- 1-minute load average 4.06 at the end\n",
}
EXPECTED = {  # the result cell each fixture gives, written out
    "load": "0.43 s for 10,000 nodes, 3.34 s for 50,000 nodes",
    "kernels": "0.82× in aggregate over 113 layers (bert; 1 BLAS thread)",
    "calibration": "-16.5% to -5.9% over 2 models; goal met for 2 of 2",
    "serve": "errors: 0 in 20000 requests; RSS start -> end (max) 154 -> 154 (154) MiB; 0.93x of the plain "
             "session at 1 clients",
    # the case count, dataflows and kinds come from the stored goldens, tests/data/scalesim_goldens.json
    "scalesim": "tests: 74 passed: each of the 72 stored cases (is, os, ws; conv and gemm) within 1%",
    "sweep": "240 points × 6 plans: 3.34x wall, 3.69x CPU time (planning only, load average 4.06); "
             "rows identical: yes",
}


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "benchmarks" / "results"
    folder.mkdir(parents=True)
    for name, text in FIXTURES.items():
        (folder / f"{name}.md").write_text(text)
    (folder / "sweep.json").write_text(json.dumps({"points": 240}))
    return tmp_path, folder


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def test_one_row_per_readme_line_and_every_benchmark_has_one():
    assert {r.bench for r in readme_table.ROWS} == {b.name for b in BENCHES}


def test_table_cells_from_fixture_results(results):
    root, folder = results
    lines = readme_table.table(folder, root, tables).splitlines()
    assert lines[0] == "| what | goal | result | file |"
    body = [_cells(x) for x in lines[2:]]
    assert len(body) == len(readme_table.ROWS)
    for row, cells in zip(readme_table.ROWS, body, strict=True):
        assert len(cells) == 4, cells
        assert cells[0] == row.what.replace("|", "\\|")
        assert cells[3] == f"`benchmarks/results/{row.bench}.md`"
        if row.bench in EXPECTED:
            assert cells[2] == EXPECTED[row.bench], row.bench
        else:  # no result file: the cell points at it, no figure is made up
            assert cells[2] == f"see `benchmarks/results/{row.bench}.md`", row.bench


def test_readme_rewrite_replaces_only_between_markers_and_is_idempotent(results, monkeypatch):
    root, folder = results
    before, after = "# Title\n\ntext | with a pipe\n\n", "\n\n## Next\nmore\n"
    readme = root / "README.md"
    readme.write_text(f"{before}{readme_table.BEGIN}\n| old | table |\n{readme_table.END}{after}")
    monkeypatch.setattr("benchmarks.__main__.ROOT", root)
    assert write_readme(folder, quick=False, readme=readme) == 0
    once = readme.read_text()
    assert once.startswith(before + readme_table.BEGIN + "\n| what | goal | result | file |")
    assert once.endswith(readme_table.END + after)
    assert "| old | table |" not in once and EXPECTED["sweep"] in once
    assert write_readme(folder, quick=False, readme=readme) == 0
    assert readme.read_text() == once


def test_readme_without_markers_is_refused():
    with pytest.raises(ValueError, match="markers"):
        readme_table.rewrite("# no table here\n", "| a |")
