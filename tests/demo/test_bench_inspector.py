"""bench/inspector_cameras.py and inspector_latency.py run end to end on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module
    spec.loader.exec_module(module)
    return module


def test_cameras_reports_the_ratio_to_the_inference_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = load("inspector_cameras")
    assert bench.main(["--tiny", "--cameras", "4", "--trial-s", "0.5", "--frame", "64x48"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "tiny@1.0.0" and out["deadline_ms"] == 500.0
    (trial,) = out["trials"]
    assert trial["frames"] == trial["judged"] > 0 and trial["unjudged"] == 0
    assert out["max_cameras"] == 4 if trial["ok"] else out["first_failing"] == 4
    limit = out["cores"] * 1000 / out["single_thread_inference_ms"]
    assert out["ratio_of_limit"] == pytest.approx(out["max_cameras"] / limit, abs=1e-3)


def test_latency_defaults_to_the_shipped_production_model() -> None:
    bench = load("inspector_latency")
    assert bench.PRODUCTION_MODEL == REPO / "edge_component" / "initial-model"
    assert (bench.PRODUCTION_MODEL / "manifest.json").is_file()


def test_latency_on_the_tiny_model(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load("inspector_latency")
    assert bench.main(["--tiny", "--runs", "5", "--frame", "64x48"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["model"] == "tiny@1.0.0" and result["inference_ms"]["p50"] > 0
