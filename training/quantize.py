"""Static int8 of the backbone in an exported model graph, with ONNX Runtime's own tool.

Only the EfficientNet-Lite0 stem and blocks are quantised (their Conv, Clip — ReLU6 — and Add
nodes, QDQ format); the tap pooling, the nearest-neighbour search, the smoothing and the
supervised head stay float, so distances keep their precision. Settings follow
``onnxruntime.quantization.quantize_static``'s own guidance for CPUs (its docstring,
"Choosing parameters for CPU inference"): uint8 activations and int8 per-channel weights, with
``reduce_range`` (7-bit weights) so that x86 cores without VNNI, whose 8-bit kernels can
saturate, compute what the training machine computed — the golden self-test on the device
holds the score to 1e-3. ``quant_pre_process`` runs first (without symbolic shape inference:
the graph's shapes are static), folding the batch norms into the convolutions.

The thresholds, the golden score and every figure of the package are then measured on the
quantised graph: it is the model the device runs.
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

CALIBRATION_IMAGES = 32  # good training images whose activations set the int8 ranges
# the Lite0 layers' node names: "/extractor/blocks.3/…", or "/blocks.3/…" where the extractor
# is called through a method (the supervised graph)
BACKBONE_NODE = re.compile(r"(^|/)(stem|blocks\.\d+)/")
QUANTISED_OPS = ("Conv", "Clip", "Add")
PRECISIONS = ("int8", "float")
DEFAULT_PRECISION = "float"


def backbone_nodes(path: Path) -> list[str]:
    """Names of the graph's backbone nodes (the Lite0 stem and blocks)."""
    import onnx

    graph = onnx.load(str(path)).graph
    return [n.name for n in graph.node if BACKBONE_NODE.search(n.name)]


def quantize_backbone(
    path: Path, input_name: str, tensors: Sequence[np.ndarray]
) -> dict[str, object]:
    """Replace the float graph at ``path`` by one whose backbone is static int8.

    ``tensors`` are model inputs ``(C, H, W)`` (the first :data:`CALIBRATION_IMAGES` are used).
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

    calibration = [tensors[i] for i in range(min(len(tensors), CALIBRATION_IMAGES))]
    if not calibration:
        raise TrainingError(f"{path}: int8 calibration needs at least one good image")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # the tool logs every node it leaves float
        try:
            with contextlib.redirect_stdout(io.StringIO()):
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
                    reduce_range=True,
                )
        finally:
            logging.getLogger().setLevel(quiet)
    return {
        "backbone": "int8",
        "format": "QDQ (ONNX Runtime quantize_static)",
        "weights": "int8 per channel, 7-bit range (reduce_range)",
        "activations": "uint8, min-max calibrated",
        "calibration_images": len(calibration),
        "quantised_nodes": len(nodes),
    }
