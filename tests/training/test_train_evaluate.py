"""Train → package → evaluate end to end on the tiny sample, and the device's view of it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.model_package import Thresholds, load_package, write_manifest
from inspector.preprocess import to_tensor
from training.calibration import (
    DEFAULT_TARGET_FALSE_REJECT_RATE,
    DEFAULT_TARGET_MANUAL_RATE,
    RULE,
)
from training.evaluate import evaluate
from training.evaluate import main as evaluate_main
from training.scoring import onnx_session, score_tensors
from training.train import main as train_main
from training.train import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def metrics(package: Path, sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("eval") / "metrics.json"
    with contextlib.redirect_stdout(io.StringIO()):
        evaluate(package, sample / "brick", out, latency_runs=5)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def unseen(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset the package never saw: tissue images as grayscale at odd, mixed sizes."""
    root = tmp_path_factory.mktemp("unseen")
    for i, path in enumerate(sorted((sample / "tissue" / "good").glob("*.png"))[:6]):
        target = root / "good" / f"part-{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("L").resize((150 + 7 * i, 97)).save(target, quality=95)
    for path in sorted((sample / "tissue" / "defect").rglob("*.png"))[:3]:
        target = root / "defect" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("L").resize((211, 160)).save(target)
    return root


def test_package_is_valid_and_describes_its_preprocessing(package: Path) -> None:
    loaded = load_package(package)  # verifies fields and the graph's sha256
    manifest = loaded.manifest
    assert manifest.ref == "brick@1.2.3"
    assert (manifest.input.color, manifest.input.height, manifest.input.width) == ("RGB", 224, 224)
    assert manifest.input.mean == (127.0,) * 3 and manifest.input.std == (128.0,) * 3
    assert manifest.outputs.anomaly_map
    assert manifest.thresholds.manual <= manifest.thresholds.reject
    assert len(manifest.data_fingerprint) == 64
    assert manifest.metrics["validation"]["good"] >= 1


def test_package_lists_the_datasets_defect_types_for_the_review_station(
    package: Path, sample: Path
) -> None:
    from inspector.review_station import defect_types_of

    folders = sorted(p.name for p in (sample / "brick" / "defect").iterdir() if p.is_dir())
    assert folders  # the sample names its defect types by folder
    metrics = load_package(package).manifest.metrics
    assert metrics["defect_types"] == folders
    assert defect_types_of(metrics) == tuple(folders)


def test_manifest_records_the_calibration_targets_and_figures(package: Path) -> None:
    manifest = load_package(package).manifest
    record = manifest.metrics["calibration"]
    assert record["rule"] == RULE
    assert record["targets"] == {
        "false_reject_rate": DEFAULT_TARGET_FALSE_REJECT_RATE,
        "manual_rate": DEFAULT_TARGET_MANUAL_RATE,
    }
    good = manifest.metrics["validation"]["good"]
    for name in ("false_reject", "manual"):
        figures = record[name]
        assert figures["images"] == good
        assert figures["rate"] == pytest.approx(figures["count"] / good)
        assert {"expected_rate_bound", "resolved"} <= set(figures)
    # a handful of validation images resolves neither target: recorded, and the band is not empty
    assert record["false_reject"]["resolved"] is False and record["notes"]
    assert record["manual"]["count"] >= 1
    assert manifest.thresholds.manual < manifest.thresholds.reject
    defects = record["defects"]
    assert defects["images"] == manifest.metrics["validation"]["defect"]
    assert defects["rejected"] + defects["manual"] + defects["passed"] == defects["images"]


def test_registration_gate_figures_are_in_the_metrics(metrics: dict) -> None:
    gate = metrics["registration_gate"]
    assert gate["confidence"] == 0.95 and gate["failed"] == len(gate["failed_checks"])
    good = metrics["images"]["good"]
    for name in ("false_reject", "manual"):
        assert gate["checks"][name]["images"] == good
        assert gate["checks"][name]["target"] in (
            DEFAULT_TARGET_FALSE_REJECT_RATE,
            DEFAULT_TARGET_MANUAL_RATE,
        )
    assert gate["checks"]["image_auroc"]["applies"] is True
    assert gate["checks"]["image_auroc"]["value"] == metrics["image_auroc"]


def test_registration_gate_fails_a_package_that_rejects_good_test_parts(
    package: Path, sample: Path, tmp_path: Path
) -> None:
    """The same graph with its reject threshold below the good scores: every good test part is
    a false reject, far above the target beyond sampling error."""
    bad = tmp_path / "bad"
    shutil.copytree(package, bad)
    manifest = load_package(bad).manifest
    low = manifest.metrics["validation"]["good_score_p50"] - 1e3
    write_manifest(bad, replace(manifest, thresholds=Thresholds(reject=low, manual=low)))
    with contextlib.redirect_stdout(io.StringIO()) as log:
        result = evaluate(bad, sample / "brick", tmp_path / "m.json", latency_runs=2, plots=False)
    gate = result["registration_gate"]
    assert gate["passed"] is False and "false_reject" in gate["failed_checks"]
    check = gate["checks"]["false_reject"]
    assert check["count"] == check["images"] == result["images"]["good"]
    assert check["lower_bound"] > check["target"]
    assert "registration gate FAILED (false_reject" in log.getvalue()


def test_golden_image_reproduces_its_score_on_the_device_path(package: Path) -> None:
    loaded = load_package(package)
    golden = loaded.manifest.golden
    assert golden is not None and loaded.golden_path is not None
    tensor = to_tensor(Image.open(loaded.golden_path), loaded.manifest.input)
    session = onnx_session(loaded.model_path)
    score = float(score_tensors(session, loaded.manifest.input.name, [tensor])[0][0])
    assert abs(score - golden.score) <= golden.tolerance


def test_graph_takes_one_image_a_call_and_has_both_outputs(package: Path, sample: Path) -> None:
    loaded = load_package(package)
    spec = loaded.manifest.input
    tensors = [
        to_tensor(Image.open(p), spec)
        for p in sorted((sample / "brick" / "good").glob("*.png"))[:3]
    ]
    session = onnx_session(loaded.model_path)
    # every shape static (see training.model.export_onnx): batch 1
    assert session.get_inputs()[0].shape == [1, spec.channels, spec.height, spec.width]
    runs = [session.run(None, {spec.name: t[None]}) for t in tensors]
    assert all(r[0].shape == (1,) and r[1].shape == (1, 224, 224) for r in runs)
    scores, maps = score_tensors(session, spec.name, tensors)  # batched callers: one by one
    np.testing.assert_allclose(scores, [r[0][0] for r in runs], rtol=1e-6, atol=1e-6)
    assert maps.shape == (3, 224, 224)
    with pytest.raises(Exception, match="index: 0 Got: 3 Expected: 1"):
        session.run(None, {spec.name: np.stack(tensors)})


def test_evaluate_uses_the_held_out_test_split_of_training_data(metrics: dict) -> None:
    assert "held-out test split" in metrics["images"]["selection"]
    cm = metrics["confusion_matrix"]
    assert sum(cm.values()) == metrics["images"]["evaluated"] == len(metrics["per_image"])
    assert 0.0 <= metrics["image_auroc"] <= 1.0
    assert set(metrics["per_defect_type"]) <= {
        "crack",
        "discolouration",
        "hole",
        "missing",
        "scratch",
        "spot",
    }
    assert metrics["latency"]["p50_ms"] > 0
    # the default int8 backbone has no float twin to compare with; the float export's parity is
    # checked in test_int8, test_mono16 and test_supervised
    assert metrics["score_parity_max_abs_diff"] is None
    assert all(Path(p).is_file() and Path(p).stat().st_size > 1000 for p in metrics["plots"])


def test_evaluate_refuses_all_images_of_the_training_data(
    package: Path, sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--model-dir",
        str(package),
        "--data",
        str(sample / "brick"),
        "--split",
        "all",
        "--out",
        str(tmp_path / "m.json"),
    ]
    assert evaluate_main(args) == 2
    assert "training data" in capsys.readouterr().err


def test_evaluate_and_inspector_agree_on_an_unseen_grayscale_dataset(
    package: Path, unseen: Path, tmp_path: Path
) -> None:
    out = tmp_path / "unseen.json"
    with contextlib.redirect_stdout(io.StringIO()):
        result = evaluate(package, unseen, out, latency_runs=3, plots=False)
    assert result["images"]["selection"].startswith("all images")
    assert result["images"]["evaluated"] == 9
    expected = {
        Path(row["file"]).name: row["score"]  # part ids are file names with extension
        for row in result["per_image"]
        if row["file"].startswith("good/")
    }
    results = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "inspect",
            "--model",
            str(package),
            "--images",
            str(unseen / "good"),
            "--out",
            str(results),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    seen = {m["part_id"]: m["score"] for m in map(json.loads, results.read_text().splitlines())}
    assert set(seen) == set(expected)
    for part, score in expected.items():
        assert seen[part] == pytest.approx(score, abs=1e-4)


def test_thresholds_ignore_the_test_split(sample: Path, tmp_path: Path) -> None:
    """Replacing every test-split image leaves the package's thresholds unchanged."""
    from training.dataset import load_dataset, split_dataset

    data = tmp_path / "brick"
    shutil.copytree(sample / "brick", data)
    runs = []
    for attempt in range(2):
        if attempt:
            splits = split_dataset(load_dataset(data), seed=1)
            for s in splits.test:
                pixels = np.asarray(Image.open(s.path)).copy()
                Image.fromarray(255 - pixels).save(s.path)  # test images changed beyond recognition
        with contextlib.redirect_stdout(io.StringIO()):
            runs.append(train(data, tmp_path / f"pkg{attempt}", seed=1, max_bank=128))
    assert runs[0].thresholds == runs[1].thresholds
    assert runs[0].data_fingerprint != runs[1].data_fingerprint


def test_sagemaker_script_mode_environment(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.dataset import main as dataset_main

    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            dataset_main(
                [
                    "check",
                    "--data",
                    str(sample / "tissue"),
                    "--out",
                    str(tmp_path / "splits"),
                    "--min-good",
                    "10",
                ]
            )
            == 0
        )
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(tmp_path / "splits" / "train"))
    monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(tmp_path / "splits" / "validation"))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    with contextlib.redirect_stdout(io.StringIO()):
        code = train_main(
            [
                "--seed",
                "2",
                "--version",
                "2.0.0",
                "--max-bank",
                "128",
                "--name",
                "tissue",
                "--pipeline-run",
                "arn:run/1",
                "--target-false-reject-rate",
                "0.01",
                "--target-manual-rate",
                "0.04",
            ]
        )
    assert code == 0
    manifest = load_package(tmp_path / "model").manifest
    assert manifest.ref == "tissue@2.0.0" and manifest.pipeline_run == "arn:run/1"
    assert manifest.metrics["validation"]["defect"] > 0
    targets = manifest.metrics["calibration"]["targets"]
    assert targets == {"false_reject_rate": 0.01, "manual_rate": 0.04}


def test_train_cli_bad_data_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data" / "good").mkdir(parents=True)
    code = train_main(["--data", str(tmp_path / "data"), "--model-dir", str(tmp_path / "m")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too few good images (0" in err[0]


def test_train_cli_bad_target_is_one_clear_line(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data", str(sample / "brick"), "--model-dir", str(tmp_path / "m")]
    assert train_main([*argv, "--target-manual-rate", "0.7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: target manual rate must be in [0, 0.5), got 0.7"]
    assert not (tmp_path / "m").exists()


def test_good_only_grayscale_dataset_of_mixed_sizes_trains_and_evaluates(
    sample: Path, tmp_path: Path
) -> None:
    data = tmp_path / "plain"
    for i, path in enumerate(sorted((sample / "brick" / "good").glob("*.png"))):
        target = data / "good" / f"{i}.bmp"
        target.parent.mkdir(parents=True, exist_ok=True)
        side = 100 + 10 * i  # any size: every image is resized to the model's input
        Image.open(path).convert("L").resize((side, side)).save(target)
    with contextlib.redirect_stdout(io.StringIO()):
        manifest = train(data, tmp_path / "pkg", max_bank=128)
        metrics = evaluate(tmp_path / "pkg", data, tmp_path / "m.json", latency_runs=3)
    assert manifest.metrics["validation"]["threshold_rule"] == RULE
    assert manifest.thresholds.reject > manifest.metrics["validation"]["good_score_max"]
    assert manifest.metrics["calibration"]["defects"] is None
    assert metrics["image_auroc"] is None and metrics["images"]["defect"] == 0
    # no AUROC without defect images: the registration gate decides on the rates alone
    gate = metrics["registration_gate"]
    assert gate["checks"]["image_auroc"]["applies"] is False
    assert gate["checks"]["image_auroc"]["passed"] is True
    assert metrics["confusion_matrix"]["tn"] + metrics["confusion_matrix"]["fp"] == 3


def test_metrics_carry_intervals_and_pixel_auroc_beside_the_old_fields(metrics: dict) -> None:
    intervals = metrics["confidence_intervals"]
    for name in ("image_auroc", "accuracy", "recall"):
        record = intervals[name]
        lo, hi = record["ci95"]
        assert lo <= record["value"] <= hi and record["resamples"] == 1000
    assert intervals["image_auroc"]["value"] == metrics["image_auroc"]
    assert intervals["accuracy"]["value"] == pytest.approx(metrics["accuracy"])
    assert intervals["recall"]["value"] == pytest.approx(metrics["recall"])
    assert intervals["method"].endswith("resampling images")  # the sample has no groups
    # the tiny sample draws every defect with a mask: pixel AUROC over them and the good images
    assert 0.5 < metrics["pixel_auroc"] <= 1.0
    counted = metrics["pixel_auroc_images"]
    assert counted["defect_images_with_mask"] == metrics["images"]["defect"]
    assert counted["good_images"] == metrics["images"]["good"]


def test_good_only_or_maskless_data_has_null_pixel_auroc(package: Path, unseen: Path) -> None:
    out = unseen.parent / "unseen-metrics.json"
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = evaluate(package, unseen, out, latency_runs=2, plots=False, resamples=50)
    assert metrics["pixel_auroc"] is None and metrics["image_auroc"] is not None
    assert metrics["confidence_intervals"]["image_auroc"]["resamples"] == 50
    assert json.loads(out.read_text())["pixel_auroc"] is None


def test_grouped_training_data_keeps_parts_out_of_the_test_split(
    sample: Path, tmp_path: Path
) -> None:
    from training.dataset import load_dataset, split_dataset

    data = tmp_path / "parts"
    shutil.copytree(sample / "brick", data)
    for i, path in enumerate(sorted((data / "good").glob("*.png"))):
        path.rename(path.with_name(f"part-{i // 2}_{i % 2}.png"))  # two shots per part
    pattern = r"^(part-\d+)_"
    with contextlib.redirect_stdout(io.StringIO()):
        train(data, tmp_path / "pkg", seed=2, max_bank=128, group_pattern=pattern)
        metrics = evaluate(tmp_path / "pkg", data, tmp_path / "m.json", latency_runs=2, plots=False)
    record = json.loads((tmp_path / "pkg" / "training.json").read_text())["split"]
    assert record["group_pattern"] == pattern and record["groups"] == f"pattern {pattern}"
    assert record["counts"]["train"]["groups"] == record["counts"]["train"]["good"] // 2
    # evaluate found the pattern in the package's record and split by it
    assert metrics["images"]["grouping"] == f"pattern {pattern}"
    assert metrics["confidence_intervals"]["method"].endswith("resampling groups")
    splits = split_dataset(load_dataset(data, group_pattern=pattern), seed=2)
    trained = {s.group for s in splits.train}
    tested = {row.get("group") for row in metrics["per_image"]} - {None}
    assert tested and not tested & trained
    assert {row["file"] for row in metrics["per_image"]} == {s.rel for s in splits.test}
