"""The int8 backbone: what is quantised, what it does to scores, and that the device runs it."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from inspector.engine import load_runner
from inspector.model_package import load_package
from inspector.runner import RunnerOptions
from training.evaluate import evaluate, torch_parity
from training.metrics import auroc
from training.quantize import BACKBONE_NODE, FLOAT_LAYER
from training.scoring import load_tensor, onnx_session, score_tensors
from training.train import train


@pytest.fixture(scope="module")
def packages(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("precision")
    with contextlib.redirect_stdout(io.StringIO()):
        for precision in ("float", "int8"):
            # coarse 64 < the 256-entry bank: the two-stage search, as in production
            train(sample / "brick", root / precision, seed=1, max_bank=256, coarse=64, refine=48,
                  precision=precision)  # fmt: skip
    return {precision: root / precision for precision in ("float", "int8")}


def _scores(package: Path, images: list[Path]) -> np.ndarray:
    loaded = load_package(package)
    session = onnx_session(loaded.model_path)
    tensors = [load_tensor(p, loaded.manifest.input) for p in images]
    return score_tensors(session, loaded.manifest.input.name, tensors)[0]


def test_the_float_package_is_the_torch_model(packages: dict[str, Path], sample: Path) -> None:
    loaded = load_package(packages["float"])
    assert loaded.manifest.metrics["precision"] == {"backbone": "float"}
    assert loaded.manifest.metrics["search"] == {"coarse": 64, "refine": 48}
    spec = loaded.manifest.input
    tensors = [load_tensor(p, spec) for p in sorted((sample / "brick").rglob("*.png"))[:4]]
    parity = torch_parity(loaded, tensors)
    assert parity is not None and parity < 1e-3


def test_only_the_backbone_is_quantised(packages: dict[str, Path]) -> None:
    loaded = load_package(packages["int8"])
    record = loaded.manifest.metrics["precision"]
    assert record["backbone"] == "int8"
    train_good = loaded.manifest.metrics["train_images"]
    assert record["calibration_images"] == min(16, train_good)
    assert record["weights"] == "int8 per channel, 8-bit range (x86 with VNNI)"
    assert set(record["trained_on"]) == {"machine", "flags", "vnni"}
    # 8-bit weights: their int8 values reach past the 7-bit range (±64) reduce_range keeps to
    weights = [
        onnx.numpy_helper.to_array(i) for i in onnx.load(str(loaded.model_path)).graph.initializer
    ]
    int8 = [w for w in weights if w.dtype == np.int8 and w.size > 16]
    assert int8 and max(int(np.abs(w.astype(np.int16)).max()) for w in int8) > 64
    graph = onnx.load(str(loaded.model_path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    quantised = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantised) >= record["quantised_nodes"] // 2
    # only the image and backbone activations are quantised; the taps leave the backbone float
    inputs = {i.name for i in graph.input}
    for node in quantised:
        source = producer.get(node.input[0])
        assert node.input[0] in inputs or (source is not None and BACKBONE_NODE.search(source.name))
    # the stem and block 0 stay float (FLOAT_LAYER): the image itself is never quantised
    dequantised = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    early = [n for n in graph.node if n.op_type == "Conv" and FLOAT_LAYER.search(n.name)]
    assert early and not any(set(n.input) & dequantised for n in early)
    assert not any(node.input[0] in inputs for node in quantised)
    later = [n for n in graph.node if n.op_type == "Conv" and re.search(r"blocks\.3/", n.name)]
    assert later and all(set(n.input) & dequantised for n in later)
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert matmuls and not any(
        producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
        for n in matmuls
        for i in n.input
    )


def test_int8_scores_follow_the_float_model(packages: dict[str, Path], sample: Path) -> None:
    good = sorted((sample / "brick" / "good").glob("*.png"))
    defect = sorted((sample / "brick" / "defect").rglob("*.png"))
    float_scores = _scores(packages["float"], good + defect)
    int8_scores = _scores(packages["int8"], good + defect)
    assert not np.allclose(float_scores, int8_scores, atol=1e-3)  # it is a different graph
    spread = float(np.ptp(float_scores))
    assert float(np.abs(float_scores - int8_scores).max()) < 0.25 * spread
    assert float(np.corrcoef(float_scores, int8_scores)[0, 1]) > 0.95
    labels = np.array([0] * len(good) + [1] * len(defect))
    quantised, reference = auroc(labels, int8_scores), auroc(labels, float_scores)
    assert quantised is not None and reference is not None
    assert quantised >= reference - 0.05


def test_an_int8_package_evaluates(packages: dict[str, Path], sample: Path, tmp_path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = evaluate(packages["int8"], sample / "brick", tmp_path / "m.json", plots=False)
    assert metrics["score_parity_max_abs_diff"] is None  # no float graph to compare with
    assert metrics["image_auroc"] is not None and metrics["latency"]["p50_ms"] > 0


def test_the_device_loads_the_int8_package_and_its_golden_score_holds(
    packages: dict[str, Path],
) -> None:
    runner = load_runner(packages["int8"], RunnerOptions())
    golden = load_package(packages["int8"]).manifest.golden
    assert golden is not None
    assert runner.self_test() == pytest.approx(golden.score, abs=golden.tolerance)
    assert runner.dynamic_batch is False


def test_vnni_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    from training.quantize import host_cpu, host_has_vnni

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\n")
    assert not host_has_vnni(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx_vnni\n")
    assert host_has_vnni(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert host_has_vnni(info)
    assert host_cpu(info)["flags"] == ["avx2", "avx512f", "avx512_vnni"]
    info.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")  # an ARM core
    assert not host_has_vnni(info)
    assert not host_has_vnni(tmp_path / "absent")


def test_a_float_two_stage_package_whose_chunk_equals_its_coarse_table_rebuilds_in_torch(
    sample: Path, tmp_path: Path
) -> None:
    # refine 384 → chunks of 512 entries, as many as the coarse table: the exporter keeps one of
    # the two equal tensors and makes the other an Identity of it
    from training.model import refine_chunk

    assert refine_chunk(384) == 512
    out = tmp_path / "pkg"
    with contextlib.redirect_stdout(io.StringIO()):
        train(sample / "brick", out, seed=1, coarse=512, refine=384, precision="float")
    loaded = load_package(out)
    assert loaded.manifest.metrics["search"] == {"coarse": 512, "refine": 384}
    assert loaded.manifest.metrics["memory_bank"] > 512  # the two-stage search is on
    graph = onnx.load(str(loaded.model_path)).graph
    initializers = {i.name for i in graph.initializer}
    assert "bank_aug_0" not in initializers  # what this test is about
    tensors = [load_tensor(p, loaded.manifest.input) for p in sorted(sample.rglob("*.png"))[:4]]
    parity = torch_parity(loaded, tensors)
    assert parity is not None and parity < 1e-3
