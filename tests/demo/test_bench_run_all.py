"""bench/run_all.py: every script runs, failures are recorded and do not stop the others."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_all", REPO / "bench" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run_all"] = module
    spec.loader.exec_module(module)
    return module


SCRIPTS = {
    "a_ok.py": "import json, sys\nprint('warming up', file=sys.stderr)\n"
    "print(json.dumps({'ms': 12.5, 'per_core': {'fps': 40}, 'runs': [1, 2, 3]}))\n",
    "b_crash.py": "import sys\nprint('model not found', file=sys.stderr)\nsys.exit(3)\n",
    "c_not_json.py": "print('hello')\n",
    "d_slow.py": "import time\ntime.sleep(30)\n",
    "e_progress_then_json.py": "print('step 1')\nprint('{\"ok\": true}')\n",
    "_helper.py": "raise SystemExit('helpers are not benchmarks')\n",
}


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bench"
    d.mkdir()
    for name, text in SCRIPTS.items():
        (d / name).write_text(text)
    (d / "run_all.py").write_text("raise SystemExit('must not run itself')\n")
    return d


def test_runs_every_script_and_records_failures(
    bench_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_all = load_run_all()
    out = tmp_path / "out"
    rc = run_all.main(["--bench-dir", str(bench_dir), "--out", str(out), "--timeout", "2"])
    assert rc == 1
    results = json.loads((out / "results.json").read_text())
    runs = {r["script"]: r for r in results["runs"]}
    assert sorted(runs) == [
        "a_ok.py",
        "b_crash.py",
        "c_not_json.py",
        "d_slow.py",
        "e_progress_then_json.py",
    ]
    assert runs["a_ok.py"]["ok"] and runs["a_ok.py"]["result"]["per_core"] == {"fps": 40}
    assert runs["e_progress_then_json.py"]["result"] == {"ok": True}
    assert runs["b_crash.py"]["error"] == "exit code 3"
    assert "model not found" in runs["b_crash.py"]["stderr_tail"]
    assert "not JSON" in runs["c_not_json.py"]["error"]
    assert runs["d_slow.py"]["error"] == "timed out after 2 s"
    assert runs["d_slow.py"]["duration_s"] < 10
    err = capsys.readouterr().err
    assert "[a_ok] warming up" in err  # progress on stderr is passed through
    assert "3 of 5 benchmarks failed" in err

    html = (out / "report.html").read_text()
    assert "<script" not in html
    assert re.search(r'<img[^>]*src="data:image/png;base64,', html)
    assert "per_core.fps" in html and "timed out after 2 s" in html
    assert html.count("<section") == 6  # overview + one per script


def test_only_filter_and_exit_zero_when_all_pass(bench_dir: Path, tmp_path: Path) -> None:
    run_all = load_run_all()
    out = tmp_path / "out"
    assert (
        run_all.main(["--bench-dir", str(bench_dir), "--out", str(out), "--only", "a_ok", "e_"])
        == 0
    )
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["script"] for r in runs] == ["a_ok.py", "e_progress_then_json.py"]


def test_no_matching_script_is_an_error(bench_dir: Path, tmp_path: Path) -> None:
    run_all = load_run_all()
    assert (
        run_all.main(["--bench-dir", str(bench_dir), "--out", str(tmp_path), "--only", "zzz"]) == 2
    )
    assert not (tmp_path / "results.json").exists()


def test_repo_bench_scripts_are_discovered() -> None:
    run_all = load_run_all()
    names = [p.name for p in run_all.discover(REPO / "bench")]
    assert "demo_plant_model.py" in names and "run_all.py" not in names
