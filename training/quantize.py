"""Static int8 of the backbone in an exported model graph, with ONNX Runtime's own tool.

Only the EfficientNet-Lite0 blocks from block 1 on are quantised (their Conv, Clip — ReLU6 — and
Add nodes, QDQ format); the stem and block 0 stay float (:data:`FLOAT_LAYER`), and so do the tap
pooling, the nearest-neighbour search, the smoothing and the supervised head, so distances keep
their precision. Settings follow ``onnxruntime.quantization.quantize_static``'s own guidance for
x86 cores **with VNNI** (its docstring, "Choosing parameters for CPU inference"): uint8
activations, int8 per-channel weights, ``reduce_range=False`` — "VNNI-capable cores typically
accumulate 8-bit products without saturation". The same docstring recommends 7-bit weights
(``reduce_range``) for x86 cores without VNNI and int8 activations for ARM; 7-bit weights cost
accuracy on the benchmark (docs/training.md), so a fleet of such cores trains
``--precision float``. Whether a device's kernels reproduce the training machine's int8 scores
within the golden tolerance (1e-3) is what the device's golden self-test checks at load — a
device that does not refuses the package with a reason and never runs a different model.
``quant_pre_process`` runs first, without symbolic shape inference (the graph's shapes are
static).

The thresholds, the golden score and every figure of the package are then measured on the
quantised graph: it is the model the device runs. The default (``--precision int8``); see
docs/training.md for what it costs and gains.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.errors import TrainingError

# good training images whose activations set the int8 ranges. The calibrator holds every
# quantised tensor of every one of them (~40 MB an image at 224 px) until it has them all; its
# CalibMaxIntermediateOutputs option does not bound that — in ORT 1.32 it drops what was
# collected (onnxruntime/quantization/calibrate.py, collect_data) — so the count bounds it
CALIBRATION_IMAGES = 16
# the Lite0 layers' node names: "/extractor/blocks.3/…", or "/blocks.3/…" where the extractor
# is called through a method (the supervised graph)
BACKBONE_NODE = re.compile(r"(^|/)(stem|blocks\.\d+)/")
# the layers that stay float: the stem and block 0 see the image at full and half resolution,
# where 8-bit steps are as large as a faint defect. Quantised with the rest, they raised the good
# frames' scores of the tiled 5 MP test data from 4.6 to 8.2 (reject 8.5) and lost a 10 px pit
# that the float graph finds; kept float (and 8-bit weights), the pit scores 5.73 over a reject
# of 5.28, as in float (docs/training.md)
FLOAT_LAYER = re.compile(r"(^|/)(stem|blocks\.0)/")
QUANTISED_OPS = ("Conv", "Clip", "Add")
PRECISIONS = ("int8", "float")
DEFAULT_PRECISION = "int8"


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")  # the x86 kernels' tiers


def host_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """This machine's architecture, its :data:`CPU_FLAGS` and whether it has VNNI."""
    import platform

    flags = _cpu_flags(cpuinfo)
    return {
        "machine": platform.machine(),
        "flags": [f for f in CPU_FLAGS if f in flags],
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
    }


def _cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}


def host_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this machine is an x86 core with VNNI (``avx512_vnni`` or ``avx_vnni``), the
    cores the int8 settings are for. For a device that is also the training machine (the demo);
    a fleet's devices are what a plant declares by its ``--precision``."""
    return bool(_cpu_flags(cpuinfo) & {"avx512_vnni", "avx_vnni"})


def backbone_nodes(path: Path) -> list[str]:
    """Names of the graph's backbone nodes that are quantised (the Lite0 blocks from block 1;
    :data:`FLOAT_LAYER` stays float)."""
    import onnx

    graph = onnx.load(str(path)).graph
    return [
        n.name
        for n in graph.node
        if BACKBONE_NODE.search(n.name) and not FLOAT_LAYER.search(n.name)
    ]


def quantize_backbone(
    path: Path, input_name: str, tensors: Sequence[np.ndarray]
) -> dict[str, object]:
    """Replace the float graph at ``path`` by one whose backbone is static int8.

    ``tensors`` are model inputs ``(C, H, W)``; a seeded sample of :data:`CALIBRATION_IMAGES`
    of them calibrates.
    Returns what was done, for the manifest's metrics.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):  # type: ignore[misc]
        """Calibration inputs, one image per call (the graph's batch is 1)."""

        def __init__(self, items: Sequence[np.ndarray]) -> None:
            self._items = iter([{input_name: np.asarray(t, np.float32)[None]} for t in items])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    # a seeded spread over the inputs: the first ones may all be of one kind (or one frame's tiles)
    count = min(len(tensors), CALIBRATION_IMAGES)
    picks = np.sort(np.random.default_rng(0).choice(len(tensors), count, replace=False))
    calibration = [tensors[int(i)] for i in picks]
    if not calibration:
        raise TrainingError(f"{path}: int8 calibration needs at least one good image")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # the tool logs every node it leaves float
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                # its optimiser folds the ReLU6 bounds into initializers, without which the
                # Clip nodes stay float and the Q/DQ pairs around them made the graph slower
                # than float (6.8 vs 5.8 ms in ORT's profiler); it also folds named weights
                # (the supervised head's anomaly_gain), so evaluate does not rebuild torch
                # from an int8 graph
                quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
                nodes = backbone_nodes(prepared)
                if not nodes:
                    raise TrainingError(f"{path}: no backbone nodes to quantise in the graph")
                quantize_static(
                    str(prepared),
                    str(path),
                    Calibration(calibration),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    nodes_to_quantize=nodes,
                    op_types_to_quantize=list(QUANTISED_OPS),
                    reduce_range=False,  # 8-bit weights: VNNI (module docstring)
                )
            quantised = _quantised_nodes(path)
        finally:
            logging.getLogger().setLevel(quiet)
    return {
        "backbone": "int8",
        "format": "QDQ (ONNX Runtime quantize_static)",
        "weights": "int8 per channel, 8-bit range (x86 with VNNI)",
        "activations": "uint8, min-max calibrated",
        "calibration_images": len(calibration),
        "quantised_nodes": quantised,
        # int8 scores follow the kernels' code path (vector width, VNNI): a device whose kernels
        # differ misses the golden score and refuses the package; this says which path set it
        "trained_on": host_cpu(),
    }


def _quantised_nodes(path: Path) -> int:
    """Nodes of the quantised graph that take an int8 tensor (a DequantizeLinear's output)."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantised = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in graph.node if n.op_type in QUANTISED_OPS and set(n.input) & dequantised)
