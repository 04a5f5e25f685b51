"""The model package contract: a directory with ``model.onnx`` and ``manifest.json``.

Defined once here, on the edge side. The training code writes packages with
:func:`write_manifest` and the rollout code validates them with :func:`load_package`; nothing
else defines the format. Only the standard library is used, so the loader runs on a device.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

FORMAT = "lineguard.model-package/1"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+][0-9A-Za-z.-]+)?$")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
COLOR_MODES = ("RGB", "L")
RESIZE_MODES = ("bilinear", "nearest", "bicubic")
FIT_MODES = ("stretch", "pad")
MIN_REGION_SIDE = 8  # a region of interest, like a frame, is at least this many pixels a side
MAX_TILES_PER_SIDE = 16
MAX_TILES = 64  # each tile is one model run: latency grows with the count
MAX_OVERLAP = 0.5
ALIGN_METHODS = ("similarity",)
MAX_ALIGN_ANGLE = 30.0  # degrees; each step of the grid is one coarse correlation
MAX_ALIGN_SCALE = 0.5
MAX_ALIGN_POSES = 1024  # coarse grid size: its spectra are held in memory
MAX_ALIGN_SIDE = 1024  # input side px
ALIGN_ROUNDS = 2  # levels of the pose pyramid below the grid, each at half the step
MAX_ALIGN_SPECTRA_MB = 256  # MiB: the pyramid's spectra, held in memory while the model is loaded


class ModelPackageError(ValueError):
    """A model package is missing, malformed or does not match its manifest."""

    def __init__(self, where: Path | str, field_path: str, message: str) -> None:
        self.where = str(where)
        self.field_path = field_path
        super().__init__(
            f"{where}: {field_path}: {message}" if field_path else f"{where}: {message}"
        )


@dataclass(frozen=True)
class TileSpec:
    """The region is cut into ``rows × cols`` tiles, neighbours sharing ``overlap`` of a tile's
    side (a fraction, 0..0.5); each tile is one model input."""

    rows: int
    cols: int
    overlap: float = 0.0

    @property
    def count(self) -> int:
        """Number of tiles (model runs) per frame."""
        return self.rows * self.cols


@dataclass(frozen=True)
class AlignSpec:
    """Register every model input to a reference pose first (``inspector.align``).

    ``reference`` is the part's reference image at the model's input size, a base64 PNG (grey
    or RGB, 0..255 like the input's pixels); the search covers ``±max_angle`` degrees in steps
    of ``angle_step`` and scales ``1 ± max_scale`` in steps of ``scale_step``. An input is
    refused (``image_align``: manual) when its final correlation peak is below ``min_peak``, or
    when more than ``max_outside`` of its registered pixels lie beyond the frame (the part
    partly out of view: what is not seen cannot be judged).
    """

    reference: str
    min_peak: float
    max_outside: float = 1.0
    method: str = "similarity"
    max_angle: float = 8.0
    angle_step: float = 2.0
    max_scale: float = 0.16
    scale_step: float = 0.04

    @property
    def coarse_axes(self) -> tuple[int, int]:
        """Grid steps each side of the reference pose: for the angle, for the scale."""
        # whole steps within the limits (the finer levels reach 1.125 steps beyond them)
        return (
            int(self.max_angle / self.angle_step + 1e-9),
            int(self.max_scale / self.scale_step + 1e-9),
        )

    @property
    def coarse_poses(self) -> int:
        """Poses of the coarse grid (one phase correlation each)."""
        angles, scales = self.coarse_axes
        return (2 * angles + 1) * (2 * scales + 1)

    @property
    def pyramid_levels(self) -> list[tuple[range, range]]:
        """Each level of the pose pyramid's angle and scale indices, in units of the finest
        level's steps (``2**ALIGN_ROUNDS`` of them to the grid's step): level 0 the grid's own
        whole steps; level ``k`` every ``2**(ALIGN_ROUNDS - k)`` units, wide enough for the
        3 × 3 poses around any pose of the level above (``inspector.align``)."""
        levels = []
        reach = [a * 2**ALIGN_ROUNDS for a in self.coarse_axes]
        for k in range(ALIGN_ROUNDS + 1):
            stride = 2 ** (ALIGN_ROUNDS - k)
            if k:
                reach = [r + stride for r in reach]
            levels.append(
                (range(-reach[0], reach[0] + 1, stride), range(-reach[1], reach[1] + 1, stride))
            )
        return levels

    @property
    def pyramid_poses(self) -> int:
        """Poses of the grid and of every finer level."""
        return sum(len(angles) * len(scales) for angles, scales in self.pyramid_levels)

    def spectra_bytes(self, height: int, width: int) -> int:
        """Memory of the pyramid's spectra for an input of that size (complex64, 1/4 side)."""
        return self.pyramid_poses * (height // 4) * (width // 8 + 1) * 8


@dataclass(frozen=True)
class InputSpec:
    """How a frame becomes the model's input tensor(s).

    The tensor is ``(batch, channels, height, width)`` float32 (layout NCHW); each channel is
    ``(pixel - mean[c]) / std[c]`` with pixels in 0..255 after conversion to ``color``.
    ``bit_depth`` is the significant bits of the frames the model takes: absent (or 8) for
    8-bit frames, 10..16 for 16-bit mono frames (12 for Mono12), which are scaled by
    ``255 / (2**bit_depth - 1)`` whatever the frame's own range. A model takes either kind, not
    both (docs/inspector.md "Frame formats").

    ``roi`` (``[x, y, width, height]`` in frame pixels) is the part of the frame the model
    judges (default: all of it); ``fit`` is how a region (or tile) that is not of the model's
    aspect becomes ``width × height``: ``stretch`` (resized to it) or ``pad`` (resized inside
    it, aspect kept, centred; the rest is 0 after normalisation, i.e. the mean); ``tiles`` cuts
    the region into overlapping tiles, one model input each (docs/training.md "Region of
    interest, aspect and tiling"). All three are written only when declared, so an inspector
    that predates them refuses such a package instead of judging it wrongly. ``align``
    registers each input to the part's reference pose before normalising it (:class:`AlignSpec`;
    whole-frame models only, not with ``tiles``); also written only when declared.
    """

    name: str
    height: int
    width: int
    color: str = "RGB"
    resize: str = "bilinear"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    dtype: str = "float32"
    bit_depth: int | None = None
    roi: tuple[int, int, int, int] | None = None
    fit: str = "stretch"
    tiles: TileSpec | None = None
    align: AlignSpec | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``input`` object (fields not declared are left out)."""
        doc = asdict(self)
        doc["mean"] = list(self.mean)
        doc["std"] = list(self.std)
        # written only when declared: packages stay readable by inspectors that predate them
        if self.bit_depth is None:
            del doc["bit_depth"]
        if self.roi is None:
            del doc["roi"]
        else:
            doc["roi"] = list(self.roi)
        if self.fit == "stretch":
            del doc["fit"]
        if self.tiles is None:
            del doc["tiles"]
        if self.align is None:
            del doc["align"]
        return doc

    @property
    def tile_count(self) -> int:
        """Model inputs per frame (1 without tiles)."""
        return self.tiles.count if self.tiles is not None else 1

    @property
    def channels(self) -> int:
        """Number of channels the model expects (3 for RGB, 1 for L)."""
        return 3 if self.color == "RGB" else 1

    @property
    def sixteen_bit(self) -> bool:
        """Whether the model takes 16-bit mono frames (a declared bit depth above 8)."""
        return self.bit_depth is not None and self.bit_depth > 8


@dataclass(frozen=True)
class FrameSpec:
    """The frames a model was trained on, which the device refuses others than.

    ``channels`` is 1 (grey or 16-bit mono) or 3 (colour); sizes are ``(width, height)``
    bounds, inclusive. Written by training under ``metrics.frames``, so inspectors that
    predate it still read the package (and judge as they did).
    """

    channels: int
    min_size: tuple[int, int]
    max_size: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        """The ``metrics.frames`` object."""
        return {
            "channels": self.channels,
            "min_size": list(self.min_size),
            "max_size": list(self.max_size),
        }


@dataclass(frozen=True)
class OutputSpec:
    """Names of the graph outputs: the image score (shape ``(batch,)``) and an optional map."""

    score: str
    anomaly_map: str | None = None


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds: ``score >= reject`` rejects; ``manual <= score < reject`` is manual."""

    reject: float
    manual: float


@dataclass(frozen=True)
class Golden:
    """A reference image shipped in the package with its expected score, for the self-test."""

    file: str
    score: float
    tolerance: float = 1e-3


@dataclass(frozen=True)
class Manifest:
    """The package's ``manifest.json``, validated.

    ``metrics`` is free-form for the device; training writes ``metrics.calibration`` there (the
    target rates the thresholds were calibrated to and the validation figures behind them,
    docs/training.md "Thresholds"), so inspectors that predate it still read the package.
    ``metrics.frames``, when present, is validated and read into :attr:`frames`.
    """

    name: str
    version: str
    sha256: str
    input: InputSpec
    outputs: OutputSpec
    thresholds: Thresholds
    created: str = ""
    golden: Golden | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    pipeline_run: str | None = None
    format: str = FORMAT
    model_file: str = MODEL_FILE

    @cached_property
    def frames(self) -> FrameSpec | None:
        """The frames the model takes (``metrics.frames``); None for packages without it."""
        doc = self.metrics.get("frames")
        return None if doc is None else _frame_spec(_Reader(MANIFEST_FILE, doc, "metrics.frames."))

    @property
    def ref(self) -> str:
        """``name@version``, as carried in every result message."""
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        """The manifest as the JSON document written to ``manifest.json``."""
        doc = asdict(self)
        doc["input"] = self.input.to_json()
        return doc


@dataclass(frozen=True)
class ModelPackage:
    """A validated package on disk."""

    root: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        """Path of the ONNX graph."""
        return self.root / self.manifest.model_file

    @property
    def golden_path(self) -> Path | None:
        """Path of the golden self-test image, if the package has one."""
        return self.root / self.manifest.golden.file if self.manifest.golden else None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Reader:
    """Reads typed fields out of a JSON object, raising errors that name the field."""

    def __init__(self, where: Path | str, doc: Any, path: str = "") -> None:
        self.where, self.doc, self.path = where, doc, path
        if not isinstance(doc, dict):
            raise ModelPackageError(where, path or "(root)", "must be an object")

    def _fail(self, key: str, message: str) -> ModelPackageError:
        return ModelPackageError(self.where, f"{self.path}{key}", message)

    def child(self, key: str, optional: bool = False) -> _Reader | None:
        if key not in self.doc or self.doc[key] is None:
            if optional:
                return None
            raise self._fail(key, "is required")
        return _Reader(self.where, self.doc[key], f"{self.path}{key}.")

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Any = None,
        expect: str = "",
    ) -> Any:
        if key not in self.doc:
            if default is ...:
                raise self._fail(key, "is required")
            return default
        value = self.doc[key]
        if kind in (float, int) or kind == (float, int):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok or (check is not None and not check(value)):
            raise self._fail(
                key, f"must be {expect or getattr(kind, '__name__', kind)}, got {value!r}"
            )
        return value

    def unknown(self, allowed: set[str]) -> None:
        extra = sorted(set(self.doc) - allowed)
        if extra:
            raise self._fail(extra[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")


def parse_manifest(doc: Any, where: Path | str = MANIFEST_FILE) -> Manifest:
    """Validate a manifest document and return it typed; raise :class:`ModelPackageError`."""
    top = _Reader(where, doc)
    top.unknown({f.name for f in Manifest.__dataclass_fields__.values()})
    fmt = top.get("format", str, FORMAT)
    if fmt != FORMAT:
        raise ModelPackageError(
            where, "format", f"unsupported format {fmt!r} (expected {FORMAT!r})"
        )
    inp = top.child("input")
    assert inp is not None
    input_spec = _input_spec(inp)
    metrics = top.get("metrics", dict, {})
    frames = metrics.get("frames")
    if frames is not None:
        frame_spec = _frame_spec(_Reader(where, frames, "metrics.frames."))
        if input_spec.sixteen_bit and frame_spec.channels != 1:
            raise ModelPackageError(
                where,
                "metrics.frames.channels",
                f"must be 1 for 16-bit mono frames (input.bit_depth {input_spec.bit_depth})",
            )
        roi = input_spec.roi
        if roi is not None and (
            roi[0] + roi[2] > frame_spec.max_size[0] or roi[1] + roi[3] > frame_spec.max_size[1]
        ):
            raise ModelPackageError(
                where,
                "input.roi",
                f"{list(roi)} reaches {roi[0] + roi[2]}x{roi[1] + roi[3]} px, beyond "
                f"metrics.frames.max_size {list(frame_spec.max_size)}: no frame could be judged",
            )
    out = top.child("outputs")
    assert out is not None
    out.unknown({"score", "anomaly_map"})
    outputs = OutputSpec(
        score=out.get("score", str), anomaly_map=out.get("anomaly_map", (str, type(None)), None)
    )
    thr = top.child("thresholds")
    assert thr is not None
    thr.unknown({"reject", "manual"})
    reject = float(thr.get("reject", (float, int)))
    manual = float(thr.get("manual", (float, int)))
    if manual > reject:
        raise ModelPackageError(
            where, "thresholds.manual", f"must be <= thresholds.reject ({manual} > {reject})"
        )
    golden = None
    gold = top.child("golden", optional=True)
    if gold is not None:
        gold.unknown({"file", "score", "tolerance"})
        golden = Golden(
            file=gold.get(
                "file", str, check=_safe_relative, expect="a file name inside the package"
            ),
            score=float(gold.get("score", (float, int))),
            tolerance=float(
                gold.get("tolerance", (float, int), 1e-3, lambda v: v > 0, "a positive number")
            ),
        )
    return Manifest(
        name=top.get(
            "name", str, check=lambda v: bool(NAME.match(v)), expect="a lower-case name [a-z0-9._-]"
        ),
        version=top.get(
            "version", str, check=lambda v: bool(SEMVER.match(v)), expect="a semantic version"
        ),
        sha256=top.get(
            "sha256",
            str,
            check=lambda v: bool(re.fullmatch(r"[0-9a-f]{64}", v)),
            expect="a hex sha256",
        ),
        input=input_spec,
        outputs=outputs,
        thresholds=Thresholds(reject=reject, manual=manual),
        created=top.get("created", str, ""),
        golden=golden,
        metrics=metrics,
        data_fingerprint=top.get("data_fingerprint", str, ""),
        pipeline_run=top.get("pipeline_run", (str, type(None)), None),
        format=fmt,
        model_file=top.get(
            "model_file", str, MODEL_FILE, _safe_relative, "a file name inside the package"
        ),
    )


def parse_input(doc: Any, where: Path | str = MANIFEST_FILE) -> InputSpec:
    """Validate a manifest's ``input`` object; raise :class:`ModelPackageError` naming the field."""
    return _input_spec(_Reader(where, doc, "input."))


def _input_spec(inp: _Reader) -> InputSpec:
    inp.unknown({f.name for f in InputSpec.__dataclass_fields__.values()})
    color = inp.get("color", str, "RGB", lambda v: v in COLOR_MODES, f"one of {COLOR_MODES}")
    channels = 3 if color == "RGB" else 1
    per_channel = f"a list of {channels} numbers"

    def channel_list(key: str, default: float, positive: bool = False) -> tuple[float, ...]:
        def ok(v: Any) -> bool:
            return (
                len(v) == channels
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
                and (not positive or all(x > 0 for x in v))
            )

        return tuple(float(x) for x in inp.get(key, list, [default] * channels, ok, per_channel))

    spec = InputSpec(
        name=inp.get("name", str),
        height=inp.get("height", int, check=lambda v: 8 <= v <= 4096, expect="an integer 8..4096"),
        width=inp.get("width", int, check=lambda v: 8 <= v <= 4096, expect="an integer 8..4096"),
        color=color,
        resize=inp.get(
            "resize", str, "bilinear", lambda v: v in RESIZE_MODES, f"one of {RESIZE_MODES}"
        ),
        mean=channel_list("mean", 0.0),
        std=channel_list("std", 1.0, positive=True),
        layout=inp.get("layout", str, "NCHW", lambda v: v == "NCHW", "'NCHW'"),
        dtype=inp.get("dtype", str, "float32", lambda v: v == "float32", "'float32'"),
        bit_depth=inp.get(
            "bit_depth",
            (int, type(None)),
            None,
            lambda v: v is None or 8 <= v <= 16,
            "an integer 8..16 (significant bits of the frames) or null",
        ),
        **read_frame_plan(inp),
    )
    if spec.align is not None and max(spec.height, spec.width) > MAX_ALIGN_SIDE:
        raise inp._fail(
            "align",
            f"registration takes inputs up to {MAX_ALIGN_SIDE} px a side, not "
            f"{spec.width}x{spec.height}",
        )
    if spec.align is not None:
        megabytes = spec.align.spectra_bytes(spec.height, spec.width) / 2**20
        if megabytes > MAX_ALIGN_SPECTRA_MB:
            raise inp._fail(
                "align.angle_step",
                f"{spec.align.pyramid_poses} poses of a {spec.width}x{spec.height} input need "
                f"{megabytes:.0f} MiB of spectra, at most {MAX_ALIGN_SPECTRA_MB}: a coarser grid",
            )
    return spec


def read_frame_plan(inp: _Reader) -> dict[str, Any]:
    """``roi``, ``fit`` and ``tiles`` of an ``input`` object, validated (errors name the field)."""

    def roi_ok(v: Any) -> bool:
        return (
            len(v) == 4
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            and v[0] >= 0
            and v[1] >= 0
            and v[2] >= MIN_REGION_SIDE
            and v[3] >= MIN_REGION_SIDE
        )

    roi = inp.get(
        "roi",
        (list, type(None)),
        None,
        lambda v: v is None or roi_ok(v),
        f"[x, y, width, height] in frame pixels (integers, x and y >= 0, width and height "
        f">= {MIN_REGION_SIDE}) or null",
    )
    fit = inp.get("fit", str, "stretch", lambda v: v in FIT_MODES, f"one of {FIT_MODES}")
    tiles = None
    tile_doc = inp.child("tiles", optional=True)
    if tile_doc is not None:
        tile_doc.unknown({"rows", "cols", "overlap"})
        per_side = f"an integer 1..{MAX_TILES_PER_SIDE}"

        def side(key: str) -> int:
            value: int = tile_doc.get(
                key, int, check=lambda v: 1 <= v <= MAX_TILES_PER_SIDE, expect=per_side
            )
            return value

        rows, cols = side("rows"), side("cols")
        overlap = float(
            tile_doc.get(
                "overlap",
                (float, int),
                0.0,
                lambda v: 0 <= v <= MAX_OVERLAP,
                f"a fraction of a tile's side, 0..{MAX_OVERLAP}",
            )
        )
        if rows * cols > MAX_TILES:
            raise tile_doc._fail(
                "cols", f"{rows}x{cols} = {rows * cols} tiles, at most {MAX_TILES}"
            )
        tiles = TileSpec(rows=rows, cols=cols, overlap=overlap)
        if roi is not None and (roi[2] < cols * MIN_REGION_SIDE or roi[3] < rows * MIN_REGION_SIDE):
            raise tile_doc._fail(
                "rows",
                f"{rows}x{cols} tiles of the {roi[2]}x{roi[3]} px region of interest are under "
                f"{MIN_REGION_SIDE} px a side",
            )
    align = _align_spec(inp.child("align", optional=True))
    if align is not None and tiles is not None and tiles.count > 1:
        raise inp._fail("align", "registration takes whole-frame models only, not tiles")
    if align is not None and fit == "pad":
        # a padded input's content box changes with the frame's aspect; the reference is one size
        raise inp._fail("align", "registration takes fit 'stretch', not 'pad'")
    return {
        "roi": None if roi is None else tuple(roi),
        "fit": fit,
        "tiles": tiles,
        "align": align,
    }


def _align_spec(reader: _Reader | None) -> AlignSpec | None:
    if reader is None:
        return None
    reader.unknown({f.name for f in AlignSpec.__dataclass_fields__.values()})

    def number(key: str, default: Any, low: float, high: float) -> float:
        return float(
            reader.get(
                key,
                (float, int),
                default,
                lambda v: not isinstance(v, bool) and low <= v <= high,
                f"a number {low:g}..{high:g}",
            )
        )

    spec = AlignSpec(
        method=reader.get(
            "method", str, "similarity", lambda v: v in ALIGN_METHODS, f"one of {ALIGN_METHODS}"
        ),
        reference=reader.get("reference", str, check=bool, expect="a base64 PNG image"),
        min_peak=number("min_peak", ..., 0.0, 1.0),
        max_outside=number("max_outside", 1.0, 0.0, 1.0),
        max_angle=number("max_angle", 8.0, 0.0, MAX_ALIGN_ANGLE),
        angle_step=number("angle_step", 2.0, 0.1, MAX_ALIGN_ANGLE),
        max_scale=number("max_scale", 0.16, 0.0, MAX_ALIGN_SCALE),
        scale_step=number("scale_step", 0.04, 0.005, MAX_ALIGN_SCALE),
    )
    if spec.coarse_poses > MAX_ALIGN_POSES:
        raise reader._fail(
            "angle_step", f"{spec.coarse_poses} poses in the search grid, at most {MAX_ALIGN_POSES}"
        )
    return spec


def _frame_spec(reader: _Reader) -> FrameSpec:
    reader.unknown({"channels", "min_size", "max_size"})

    def size(key: str) -> tuple[int, int]:
        value = reader.get(
            key,
            list,
            check=lambda v: (
                len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
            ),
            expect="[width, height] in positive integers",
        )
        return (value[0], value[1])

    channels = reader.get("channels", int, check=lambda v: v in (1, 3), expect="1 or 3")
    low, high = size("min_size"), size("max_size")
    if low[0] > high[0] or low[1] > high[1]:
        raise reader._fail("min_size", f"must not exceed max_size ({low} > {high})")
    return FrameSpec(channels=channels, min_size=low, max_size=high)


def _safe_relative(value: str) -> bool:
    path = Path(value)
    return bool(value) and not path.is_absolute() and ".." not in path.parts


def load_package(root: Path | str, verify_checksum: bool = True) -> ModelPackage:
    """Read and validate a package directory: manifest fields, files present, graph sha256."""
    root = Path(root)
    if not root.is_dir():
        raise ModelPackageError(root, "", "model package directory not found")
    manifest_path = root / MANIFEST_FILE
    try:
        doc = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelPackageError(manifest_path, "", "manifest.json is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackageError(manifest_path, "", f"not valid JSON ({exc})") from None
    manifest = parse_manifest(doc, manifest_path)
    package = ModelPackage(root=root, manifest=manifest)
    if not package.model_path.is_file():
        raise ModelPackageError(manifest_path, "model_file", f"{manifest.model_file} is missing")
    if verify_checksum:
        actual = sha256_file(package.model_path)
        if actual != manifest.sha256:
            raise ModelPackageError(
                manifest_path,
                "sha256",
                f"{manifest.model_file} has sha256 {actual}, manifest says {manifest.sha256}",
            )
    golden = package.golden_path
    if golden is not None and not golden.is_file():
        raise ModelPackageError(
            manifest_path,
            "golden.file",
            f"{manifest.golden.file if manifest.golden else ''} is missing",
        )
    return package


def write_manifest(root: Path | str, manifest: Manifest) -> Path:
    """Validate ``manifest`` and write it as ``root/manifest.json``; return the path."""
    root = Path(root)
    doc = manifest.to_json()
    parse_manifest(doc, root / MANIFEST_FILE)
    path = root / MANIFEST_FILE
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
