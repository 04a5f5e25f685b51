"""The ONNX Runtime runner on a real (tiny) model package: checks, batching, self-test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspector.runner import (
    GOLDEN_MISMATCH,
    INPUT_SHAPE,
    PACKAGE_INVALID,
    SHA256_MISMATCH,
    InferenceError,
    ModelLoadError,
    ModelRunner,
    RunnerOptions,
)
from tests.support.tiny_model import build_tiny_package, expected_score, part_image


def test_scores_match_an_independent_numpy_computation(tiny_runner: ModelRunner) -> None:
    for delta in (0.0, 0.05, 0.15, 0.25, -0.2):
        image = part_image(delta, 48)  # resized to 32x32 by the manifest's input spec
        assert tiny_runner.score_image(image) == pytest.approx(expected_score(image), abs=1e-5)


def test_dynamic_batch_is_detected_and_batches_equal_single_runs(
    tiny_runner: ModelRunner,
) -> None:
    assert tiny_runner.dynamic_batch
    tensors = [tiny_runner.preprocess(part_image(d)) for d in np.linspace(0, 0.3, 11)]
    batched = tiny_runner.score(tensors)  # 11 frames with max_batch 8: two runs
    single = [tiny_runner.score([t])[0] for t in tensors]
    assert batched == pytest.approx(single, abs=1e-6)
    assert tiny_runner.score([]) == []


def test_fixed_batch_graph_is_run_one_frame_at_a_time(tmp_path: Path) -> None:
    runner = ModelRunner.load(build_tiny_package(tmp_path / "fixed", dynamic_batch=False))
    assert not runner.dynamic_batch
    tensors = [runner.preprocess(part_image(d)) for d in (0.05, 0.1, 0.2)]
    assert runner.score(tensors) == pytest.approx([0.05, 0.1, 0.2], abs=3e-3)


def test_grey_model_package(tmp_path: Path) -> None:
    runner = ModelRunner.load(build_tiny_package(tmp_path / "grey", color="L"))
    image = part_image(0.1, 32, "L")
    assert runner.score_image(image) == pytest.approx(expected_score(image, color="L"), abs=1e-5)


def test_self_test_returns_the_golden_score(tiny_runner: ModelRunner) -> None:
    golden = tiny_runner.manifest.golden
    assert golden is not None
    assert tiny_runner.self_test() == pytest.approx(golden.score, abs=golden.tolerance)


def test_warm_up_measures_whether_a_micro_batch_pays(
    tiny_package_dir: Path, tmp_path: Path
) -> None:
    # the tiny model's per-run overhead dwarfs its work: batching is far cheaper per frame
    assert ModelRunner.load(tiny_package_dir, RunnerOptions(warmup_runs=3)).batch_pays
    fixed = ModelRunner.load(build_tiny_package(tmp_path / "fixed", dynamic_batch=False))
    assert not fixed.batch_pays
    assert not ModelRunner.load(tiny_package_dir, RunnerOptions(max_batch=1)).batch_pays


def test_threads_option_reaches_the_session(tiny_package_dir: Path) -> None:
    runner = ModelRunner.load(tiny_package_dir, RunnerOptions(intra_op_threads=2, warmup_runs=0))
    assert runner._session.get_session_options().intra_op_num_threads == 2


def test_input_shape_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        ModelRunner.load(build_tiny_package(tmp_path / "p", manifest_size=48))
    assert err.value.reason == INPUT_SHAPE
    assert "['N', 3, 48, 48]" in str(err.value)


def test_golden_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        ModelRunner.load(build_tiny_package(tmp_path / "p", golden_score=0.5))
    assert err.value.reason == GOLDEN_MISMATCH


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "p"
    build_tiny_package(root)
    other = tmp_path / "other"
    build_tiny_package(other, size=16)
    (root / "model.onnx").write_bytes((other / "model.onnx").read_bytes())
    with pytest.raises(ModelLoadError) as err:
        ModelRunner.load(root)
    assert err.value.reason == SHA256_MISMATCH


def test_missing_or_malformed_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        ModelRunner.load(tmp_path / "nowhere")
    assert err.value.reason == PACKAGE_INVALID
    root = tmp_path / "p"
    build_tiny_package(root)
    doc = json.loads((root / "manifest.json").read_text())
    doc["outputs"]["score"] = "missing_output"
    (root / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="no output 'missing_output'"):
        ModelRunner.load(root)


def test_runtime_failure_is_an_inference_error(tmp_path: Path) -> None:
    package = build_tiny_package(tmp_path / "broken", broken=True)
    with pytest.raises(ModelLoadError) as err:
        ModelRunner.load(package)  # the golden self-test catches it at load time
    assert err.value.reason == GOLDEN_MISMATCH
    runner = ModelRunner.load(package, RunnerOptions(warmup_runs=0), self_test=False)
    with pytest.raises(InferenceError, match="tiny@1.0.0"):
        runner.score_image(part_image(0.0))


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="intra_op_threads"):
        RunnerOptions(intra_op_threads=0)
    with pytest.raises(ValueError, match="max_batch"):
        RunnerOptions(max_batch=0)
