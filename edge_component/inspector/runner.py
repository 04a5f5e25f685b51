"""ONNX Runtime session for a model package: checks, warm-up, self-test, micro-batched scoring.

:meth:`ModelRunner.load` is the only way in, and it refuses a package unless the manifest is
valid, the graph matches its sha256, the graph's input matches the manifest's input spec and
the golden image (when shipped) scores as the manifest says. A runner that exists is usable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from inspector.decode import SIXTEEN_BIT_MODES, DecodeLimits, FrameError, decode_image
from inspector.model_package import ModelPackage, ModelPackageError, load_package
from inspector.preprocess import combine_tiles, frame_tensors, to_tensor

# ModelLoadError reasons
PACKAGE_INVALID = "package_invalid"
SHA256_MISMATCH = "sha256_mismatch"
SESSION_ERROR = "session_error"
INPUT_SHAPE = "input_shape"
GOLDEN_MISMATCH = "golden_mismatch"

BATCH_GAIN = 0.8  # batch only when a frame costs at most this share of its batch-1 time


class ModelLoadError(Exception):
    """A model package that cannot be served; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class InferenceError(Exception):
    """The model failed on a batch (session error or outputs of the wrong shape)."""


@dataclass(frozen=True)
class RunnerOptions:
    """Session settings: intra-op threads, warm-up runs, the largest micro-batch, spinning."""

    intra_op_threads: int = 1
    warmup_runs: int = 2
    max_batch: int = 8
    allow_spinning: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.intra_op_threads <= 64:
            raise ValueError(f"intra_op_threads: {self.intra_op_threads} not in 1..64")
        if not 0 <= self.warmup_runs <= 100:
            raise ValueError(f"warmup_runs: {self.warmup_runs} not in 0..100")
        if not 1 <= self.max_batch <= 256:
            raise ValueError(f"max_batch: {self.max_batch} not in 1..256")


def _import_ort() -> Any:
    import onnxruntime  # imported lazily: 0.3 s, and not needed to read a manifest

    return onnxruntime


class ModelRunner:
    """A loaded, verified model package ready to score preprocessed frames."""

    def __init__(self, package: ModelPackage, session: Any, options: RunnerOptions) -> None:
        self.package = package
        self.manifest = package.manifest
        self.options = options
        self._session = session
        self.dynamic_batch = _check_input(session, package)
        # Whether scoring several frames in one call costs less per frame than one at a time;
        # measured by :meth:`warm_up`. Convolutional models on CPU often gain nothing.
        self.batch_pays = self.dynamic_batch and options.max_batch > 1
        self._check_outputs(session)

    @classmethod
    def load(
        cls,
        package: ModelPackage | Path | str,
        options: RunnerOptions | None = None,
        *,
        self_test: bool = True,
    ) -> ModelRunner:
        """Load and verify a package (manifest, sha256, input shape, golden); warm it up."""
        options = options or RunnerOptions()
        if not isinstance(package, ModelPackage):
            try:
                package = load_package(package, verify_checksum=True)
            except ModelPackageError as exc:
                reason = SHA256_MISMATCH if exc.field_path == "sha256" else PACKAGE_INVALID
                raise ModelLoadError(reason, str(exc)) from None
        spec = package.manifest.input
        if spec.align is not None:
            from inspector.align import reference_size, registrar

            try:  # a reference that does not decode refuses the package, not every frame
                width, height, channels = reference_size(spec.align.reference)
            except ValueError as exc:
                raise ModelLoadError(PACKAGE_INVALID, f"{package.root}: {exc}") from None
            # checked before the pyramid is built: its memory bound is the input's size's
            if (height, width) != (spec.height, spec.width) or channels not in (1, spec.channels):
                raise ModelLoadError(
                    PACKAGE_INVALID,
                    f"{package.root}: input.align.reference is {width}x{height} px with "
                    f"{channels} channel(s), the input {spec.width}x{spec.height} with "
                    f"{spec.channels}",
                )
            try:
                registrar(spec.align)
            except ValueError as exc:
                raise ModelLoadError(PACKAGE_INVALID, f"{package.root}: {exc}") from None
        ort = _import_ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 4  # errors come back as exceptions; we report them
        if not options.allow_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(
                str(package.model_path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(SESSION_ERROR, f"{package.model_path}: {exc}") from None
        runner = cls(package, session, options)
        if self_test:
            runner.self_test()
        runner.warm_up()
        return runner

    @property
    def ref(self) -> str:
        """``name@version`` of the served package."""
        return self.manifest.ref

    def _check_outputs(self, session: Any) -> None:
        names = {o.name for o in session.get_outputs()}
        wanted = [self.manifest.outputs.score]
        if self.manifest.outputs.anomaly_map:
            wanted.append(self.manifest.outputs.anomaly_map)
        for name in wanted:
            if name not in names:
                raise ModelLoadError(
                    PACKAGE_INVALID,
                    f"{self.package.model_path}: graph has no output {name!r} (has {sorted(names)})",
                )

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Image → ``(C, H, W)`` float32 of a model without tiles; FrameError if it does not fit."""
        return to_tensor(image, self.manifest.input, self.manifest.frames)

    def frame_tensors(self, image: Image.Image) -> np.ndarray:
        """Image → ``(tiles, C, H, W)`` float32, as the manifest says; FrameError if it does not fit."""
        return frame_tensors(image, self.manifest.input, self.manifest.frames)

    def score(self, tensors: Sequence[np.ndarray]) -> list[float]:
        """Score preprocessed frames; batched up to ``max_batch`` when the batch dim is dynamic."""
        if not tensors:
            return []
        step = self.options.max_batch if self.dynamic_batch else 1
        scores: list[float] = []
        for start in range(0, len(tensors), step):
            chunk = tensors[start : start + step]
            batch = np.stack(chunk) if len(chunk) > 1 else chunk[0][None]
            scores.extend(self._run(batch))
        return scores

    def _run(self, batch: np.ndarray) -> list[float]:
        name = self.manifest.input.name
        try:
            (out,) = self._session.run([self.manifest.outputs.score], {name: batch})
        except Exception as exc:
            raise InferenceError(f"{self.ref}: {type(exc).__name__}: {str(exc)[:200]}") from None
        values = np.asarray(out, dtype=np.float64)
        if values.size != batch.shape[0]:
            raise InferenceError(
                f"{self.ref}: score output has shape {values.shape} for a batch of {batch.shape[0]}"
            )
        return [float(v) for v in values.reshape(-1)]

    def score_maps(self, tensors: Sequence[np.ndarray]) -> tuple[list[float], list[np.ndarray]]:
        """Scores and anomaly maps (one ``(H, W)``-like array each) of preprocessed frames.

        Only for a package whose manifest names an ``anomaly_map`` output (:attr:`has_map`).
        """
        if not self.has_map:
            raise InferenceError(f"{self.ref}: the package has no anomaly map output")
        step = self.options.max_batch if self.dynamic_batch else 1
        scores: list[float] = []
        maps: list[np.ndarray] = []
        for start in range(0, len(tensors), step):
            chunk = tensors[start : start + step]
            batch = np.stack(chunk) if len(chunk) > 1 else chunk[0][None]
            values, planes = self._run_maps(batch)
            scores.extend(values)
            maps.extend(planes)
        return scores, maps

    @property
    def has_map(self) -> bool:
        """Whether the package's graph gives an anomaly map beside the score."""
        return bool(self.manifest.outputs.anomaly_map)

    def _run_maps(self, batch: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
        name = self.manifest.input.name
        outputs = [self.manifest.outputs.score, str(self.manifest.outputs.anomaly_map)]
        try:
            out, planes = self._session.run(outputs, {name: batch})
        except Exception as exc:
            raise InferenceError(f"{self.ref}: {type(exc).__name__}: {str(exc)[:200]}") from None
        values = np.asarray(out, dtype=np.float64)
        planes = np.asarray(planes)
        if values.size != batch.shape[0] or planes.ndim < 2 or planes.shape[0] != batch.shape[0]:
            raise InferenceError(
                f"{self.ref}: outputs of shapes {values.shape} and {planes.shape} for a batch "
                f"of {batch.shape[0]}"
            )
        return [float(v) for v in values.reshape(-1)], list(planes)

    def score_image(self, image: Image.Image) -> float:
        """Score one decoded image (preprocess, run every tile, combine)."""
        scores = self.score(list(self.frame_tensors(image)))
        return combine_tiles(scores, None, self.manifest.input, image.size)[0]

    def self_test(self) -> float | None:
        """Score the golden image and compare with the manifest; raise :class:`ModelLoadError`."""
        golden = self.manifest.golden
        path = self.package.golden_path
        if golden is None or path is None:
            return None
        try:
            image = decode_image(path.read_bytes(), DecodeLimits(modes=_GOLDEN_MODES))
        except (OSError, FrameError) as exc:
            raise ModelLoadError(
                GOLDEN_MISMATCH, f"{path}: cannot read golden image: {exc}"
            ) from None
        try:
            got = self.score_image(image)
        except (InferenceError, FrameError) as exc:
            raise ModelLoadError(GOLDEN_MISMATCH, f"golden image: {exc}") from None
        if not math.isfinite(got) or abs(got - golden.score) > golden.tolerance:
            raise ModelLoadError(
                GOLDEN_MISMATCH,
                f"{self.ref}: golden {golden.file} scored {got:.6g}, manifest says "
                f"{golden.score:.6g} ± {golden.tolerance:g}",
            )
        return got

    def warm_up(self) -> None:
        """Run zero-valued batches so the first real frame does not pay for allocation.

        With a dynamic batch dimension it also times one frame against a micro-batch and sets
        :attr:`batch_pays`: a batch is only worth waiting for when it is cheaper per frame.
        """
        spec = self.manifest.input
        zero = np.zeros((spec.channels, spec.height, spec.width), dtype=np.float32)
        size = min(4, self.options.max_batch)
        single: list[float] = []
        batched: list[float] = []
        for _ in range(self.options.warmup_runs):
            single.append(_timed(self.score, [zero]))
            if self.dynamic_batch and size > 1:
                batched.append(_timed(self.score, [zero] * size) / size)
        if len(batched) >= 2:  # the first run of each size pays for allocation
            self.batch_pays = min(batched[1:]) < BATCH_GAIN * min(single[1:])


def _timed(score: Any, tensors: list[np.ndarray]) -> float:
    start = time.perf_counter()
    score(tensors)
    return time.perf_counter() - start


# a golden image is one of the package's own training frames, 16-bit mono included
_GOLDEN_MODES = ("RGB", "L", "RGBA", "P", *SIXTEEN_BIT_MODES)


def _check_input(session: Any, package: ModelPackage) -> bool:
    """Check the graph's input against the manifest; return whether the batch dim is dynamic."""
    spec = package.manifest.input
    inputs = session.get_inputs()
    by_name = {i.name: i for i in inputs}
    where = f"{package.model_path}"
    if spec.name not in by_name:
        raise ModelLoadError(
            INPUT_SHAPE, f"{where}: no input {spec.name!r} (graph has {sorted(by_name)})"
        )
    if len(inputs) != 1:
        raise ModelLoadError(INPUT_SHAPE, f"{where}: graph needs {len(inputs)} inputs, expected 1")
    node = by_name[spec.name]
    if node.type != "tensor(float)":
        raise ModelLoadError(INPUT_SHAPE, f"{where}: input type {node.type}, manifest float32")
    shape = list(node.shape)
    expected = [spec.channels, spec.height, spec.width]
    if len(shape) != 4:
        raise ModelLoadError(INPUT_SHAPE, f"{where}: input rank {len(shape)}, expected 4 (NCHW)")
    for got, want in zip(shape[1:], expected, strict=True):
        if isinstance(got, int) and got != want:
            raise ModelLoadError(
                INPUT_SHAPE,
                f"{where}: graph input shape {shape} does not match manifest {['N', *expected]}",
            )
    batch = shape[0]
    if isinstance(batch, int) and batch != 1:
        raise ModelLoadError(INPUT_SHAPE, f"{where}: fixed batch {batch}; expected 1 or dynamic")
    return not isinstance(batch, int)
