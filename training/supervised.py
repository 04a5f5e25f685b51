"""The supervised candidate: the anomaly model plus a head trained on the labelled defects.

When a dataset brings defect images, part of them train a small head on the anomaly model's
patch features (semi-supervised: good images and labelled defects). A cell's logit is

    w · a + B · tanh(head(features) / B),   w = 0.5 + softplus(s) ≥ 0.5

where ``a`` is the anomaly model's standardised nearest-neighbour distance of that cell and
``head`` a two-layer 1×1-convolution network on the cell's (balanced, unprojected) tap features,
bounded to ±``B`` (:data:`HEAD_BOUND`). The head learns which feature directions the labelled
defects move (a faint darkening, a change of grain) that the distance alone weighs no more than
normal variation; it can move a cell's logit by ``B`` at most either way, and the distance's
weight never falls below 0.5, so a cell far from every good patch — a defect of a type no
training image showed — still stands out, by at least ``w · Δa − 2B``. The image score is the mean of the ``top_k``
highest cell logits (as the anomaly model's), the map the cell logits up-sampled.

Training is multiple-instance: an image's label applies to its pooled score; with a defect's
mask, cells inside the mask are positive and cells well outside it negative as well. The good
images' distances are taken leave-one-image-out (bank entries cut from the same image are
ignored), since a training image's own patches sit in the bank and would look more normal than
any new part does. The export is one ONNX graph with the same inputs and outputs as the anomaly
model's.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.model import PatchCoreModel, image_outputs

DEFAULT_HIDDEN = 16
HEAD_BOUND = 4.0  # the head moves a cell's logit by at most this, either way
MIN_ANOMALY_WEIGHT = 0.5  # the distance's weight never falls below this
DEFAULT_STEPS = 400
DEFAULT_WEIGHT_DECAY = 1e-3
MAX_GOOD_IMAGES = 512  # good images the head sees at most (memory stays bounded)
MAX_DEFECT_IMAGES = 1024  # defect images the head sees at most (likewise)
MASK_POSITIVE = 0.25  # share of a cell the mask must cover for the cell to be a positive
MASK_MARGIN = 2  # cells this far from a mask are negatives of a defect image
EXACT = 1e-6  # squared distance below which a bank entry is one of the image's own patches


class SupervisedModel(nn.Module):
    """Anomaly model + head: image → (score ``(B,)``, map ``(B, H, W)``), one graph."""

    def __init__(self, anomaly: PatchCoreModel, hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.anomaly = anomaly
        dims = int(anomaly.extractor.weight.numel())
        if dims == 1:
            raise ValueError("the supervised head needs balanced taps (per-channel weights)")
        self.hidden = nn.Conv2d(dims, hidden, 1)
        self.out = nn.Conv2d(hidden, 1, 1)
        # the weight starts at 1: the head starts from the anomaly model's own score
        start = 1.0 - MIN_ANOMALY_WEIGHT
        self.anomaly_gain = nn.Parameter(torch.tensor(math.log(math.expm1(start))))
        self.top_k = anomaly.top_k

    def weight(self) -> torch.Tensor:
        """The anomaly distance's weight, at least :data:`MIN_ANOMALY_WEIGHT`."""
        return MIN_ANOMALY_WEIGHT + F.softplus(self.anomaly_gain)

    def anomaly_weight(self) -> float:
        """:meth:`weight` as a number."""
        return float(self.weight().detach())

    def bounded(self, head: torch.Tensor) -> torch.Tensor:
        """The head's raw output bounded to ±:data:`HEAD_BOUND`."""
        return HEAD_BOUND * torch.tanh(head / HEAD_BOUND)

    def head(self, raw: torch.Tensor) -> torch.Tensor:
        """The bounded head ``(B, 1, h, w)`` on the balanced tap features."""
        return self.bounded(self.out(F.relu(self.hidden(raw))))

    def cells(self, raw: torch.Tensor, anomaly: torch.Tensor) -> torch.Tensor:
        """Cell logits ``(B, 1, h, w)`` from tap features and standardised distances."""
        return self.weight() * anomaly + self.head(raw)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score a normalised batch; the map has the input's spatial size.

        With the anomaly model's two-stage search the cells refined are those whose *logit*
        bound stands highest (the head, divided by the distance's weight, offsets each cell's
        standardised bound), so the top cells' logits come from exact distances, as in training.
        """
        model = self.anomaly
        raw = model.extractor.balanced(x)
        projected = model.extractor.project(raw)
        head = self.head(raw)
        weight = self.weight()
        if model.coarse:
            distances = model.smooth(model.two_stage(projected, head / weight))
        else:
            distances = model.nearest(projected)
        anomaly = (distances - model.center) / model.scale
        return image_outputs(weight * anomaly + head, self.top_k, x.shape[-2:])

    def searching(self, anomaly: PatchCoreModel) -> SupervisedModel:
        """This head on ``anomaly`` (the same extractor, bank and statistics, its own search):
        the head is trained on the exact search and runs on the model's two-stage one."""
        same = [
            torch.equal(anomaly.bank, self.anomaly.bank),
            torch.equal(anomaly.center, self.anomaly.center),
            torch.equal(anomaly.scale, self.anomaly.scale),
            anomaly.extractor is self.anomaly.extractor,
            torch.equal(anomaly.kernel, self.anomaly.kernel),
            anomaly.top_k == self.anomaly.top_k,
        ]
        if not all(same):
            raise ValueError("the head runs only on the anomaly model it was trained on")
        model = SupervisedModel(anomaly, int(self.hidden.out_channels))
        model.hidden.load_state_dict(self.hidden.state_dict())
        model.out.load_state_dict(self.out.state_dict())
        model.anomaly_gain.data.copy_(self.anomaly_gain.data)
        return model.eval().requires_grad_(False)


def features(model: PatchCoreModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The balanced tap features ``(B, D, h, w)`` and exact standardised distances
    ``(B, 1, h, w)``: what the head is trained on."""
    raw = model.extractor.balanced(x)
    projected = model.extractor.project(raw)
    return raw, (model.nearest(projected) - model.center) / model.scale


@torch.no_grad()
def _leave_one_out(model: PatchCoreModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`features` of bank images, each without the bank entries cut from itself."""
    raw = model.extractor.balanced(x)
    projected = model.extractor.project(raw)
    bank = model.bank
    b, d, h, w = projected.shape
    maps = []
    for i in range(b):
        patches = projected[i].flatten(1).t()  # (hw, D)
        dist2 = torch.cdist(patches, bank).square()  # (hw, N)
        own = dist2.amin(dim=0) < EXACT  # bank entries that are patches of this image
        dist2[:, own] = float("inf")
        nearest = torch.sqrt(torch.clamp(dist2.amin(dim=1), min=0.0)).reshape(1, 1, h, w)
        maps.append(model.smooth(nearest))
    return raw, (torch.cat(maps) - model.center) / model.scale


def _cell_targets(mask: np.ndarray | None, grid: tuple[int, int]) -> torch.Tensor | None:
    """Per-cell targets of a defect image: 1 inside the mask, 0 well outside, -1 ignored."""
    if mask is None or not mask.any():
        return None
    cover = F.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], grid)
    near = F.max_pool2d((cover > 0).float(), 2 * MASK_MARGIN + 1, stride=1, padding=MASK_MARGIN)
    target = torch.full(grid, -1.0)
    target[(near[0, 0] == 0)] = 0.0
    positive = cover[0, 0] >= MASK_POSITIVE
    if not positive.any():  # a thin defect covers no cell by a quarter: its best-covered cell
        positive = cover[0, 0] == cover.max()
    target[positive] = 1.0
    return target


def fit_head(
    anomaly: PatchCoreModel,
    good: Sequence[np.ndarray],
    defects: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | Path | None] | None = None,
    *,
    hidden: int = DEFAULT_HIDDEN,
    steps: int = DEFAULT_STEPS,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> SupervisedModel:
    """Train the head on training good images (bank images) and labelled defect images.

    ``masks`` (one per defect image, ``None`` where there is none, at any resolution; a path is
    read when its image's features are) add cell targets. The anomaly model is frozen. At most
    :data:`MAX_GOOD_IMAGES` good and :data:`MAX_DEFECT_IMAGES` defect images (seeded samples)
    feed the head, read a batch at a time: only their features are held.
    """
    if not defects:
        raise ValueError("the supervised candidate needs defect images to train on")
    if masks and len(masks) != len(defects):
        raise ValueError(f"{len(masks)} masks for {len(defects)} defect images: one each (or None)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    # images are read one batch at a time, by index: only their features stay in memory
    good_index = list(range(len(good)))
    if len(good) > MAX_GOOD_IMAGES:
        good_index = sorted(rng.choice(len(good), MAX_GOOD_IMAGES, replace=False).tolist())
    defect_index = list(range(len(defects)))
    if len(defects) > MAX_DEFECT_IMAGES:
        defect_index = sorted(rng.choice(len(defects), MAX_DEFECT_IMAGES, replace=False).tolist())
        log(
            f"supervised: the head trains on {MAX_DEFECT_IMAGES} of the {len(defects)} training "
            "defect images (a seeded sample; memory stays bounded)"
        )
    good_count = len(good_index)
    started = time.perf_counter()
    x: torch.Tensor | None = None  # (images · cells, D) tap features, filled batch by batch
    a = torch.empty(0)
    grid = (0, 0)
    done = 0
    batches = [(good, good_index[i : i + 16], True) for i in range(0, good_count, 16)] + [
        (defects, defect_index[i : i + 16], False) for i in range(0, len(defect_index), 16)
    ]
    for images, index, own in batches:
        batch = torch.from_numpy(np.stack([images[i] for i in index]))
        with torch.no_grad():
            raw, dist = _leave_one_out(anomaly, batch) if own else features(anomaly, batch)
        if x is None:
            grid = (int(raw.shape[-2]), int(raw.shape[-1]))
            rows = (good_count + len(defect_index)) * grid[0] * grid[1]
            x = torch.empty(rows, int(raw.shape[1]))
            a = torch.empty(rows)
        span = len(index) * grid[0] * grid[1]
        x[done : done + span] = raw.permute(0, 2, 3, 1).reshape(span, -1)
        a[done : done + span] = dist.reshape(-1)
        done += span
    assert x is not None
    y = torch.cat([torch.zeros(good_count), torch.ones(len(defect_index))])
    cell_target = torch.full((len(y), *grid), -1.0)
    cell_target[y == 0] = 0.0
    for row, i in enumerate(defect_index):
        mask = masks[i] if masks else None
        if isinstance(mask, str | os.PathLike):
            mask = read_mask(Path(mask))
        target = _cell_targets(mask, grid)
        if target is not None:
            cell_target[good_count + row] = target
    log(
        f"supervised: features of {good_count} good and {len(defect_index)} defect images "
        f"in {time.perf_counter() - started:.1f}s ({x.numel() * 4 / 2**20:.0f} MiB)"
    )
    model = SupervisedModel(anomaly, hidden)
    # weight decay regularises the head only: decaying the distance's weight would pull it down
    groups: list[dict[str, Any]] = [
        {"params": [*model.hidden.parameters(), *model.out.parameters()]},
        {"params": [model.anomaly_gain], "weight_decay": 0.0},
    ]
    optimiser = torch.optim.AdamW(
        groups,
        lr=1e-2,
        weight_decay=weight_decay,
    )
    n_good, n_defect = float((y == 0).sum()), float((y == 1).sum())
    image_weight = torch.where(y == 1, n_good / n_defect, 1.0)
    image_weight = image_weight / image_weight.mean()
    known = cell_target >= 0
    positives = float((cell_target == 1).sum())
    cell_weight = (
        torch.where(cell_target == 1, float(known.sum()) / max(2 * positives, 1.0), 1.0)
        * known.float()
    )
    cell_weight = cell_weight / cell_weight.sum().clamp(min=1.0)
    started = time.perf_counter()
    # the 1×1 convolutions as matrix products over (images·cells, D): several times faster
    n = len(y)
    for step in range(steps):
        optimiser.zero_grad()
        hidden_out = F.relu(F.linear(x, model.hidden.weight[:, :, 0, 0], model.hidden.bias))
        head = F.linear(hidden_out, model.out.weight[:, :, 0, 0], model.out.bias)[:, 0]
        flat = (model.weight() * a + model.bounded(head)).reshape(n, -1)
        cells = flat.reshape(n, 1, *grid)
        pooled = flat.topk(min(model.top_k, flat.shape[1]), dim=1).values.mean(dim=1)
        image_loss = F.binary_cross_entropy_with_logits(pooled, y, weight=image_weight)
        cell_loss = (
            F.binary_cross_entropy_with_logits(
                cells[:, 0], cell_target.clamp(min=0), reduction="none"
            )
            * cell_weight
        ).sum()
        loss = image_loss + cell_loss
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == steps - 1:
            log(
                f"supervised: step {step + 1}/{steps} loss {loss.item():.4f} "
                f"(image {image_loss.item():.4f}, cells {cell_loss.item():.4f})"
            )
    log(
        f"supervised: head {hidden} hidden units trained in {time.perf_counter() - started:.1f}s; "
        f"anomaly weight {model.anomaly_weight():.3f}"
    )
    return model.eval().requires_grad_(False)


def read_mask(path: Path | None) -> np.ndarray | None:
    """A mask image as a boolean array (non-zero pixels are the defect), or None."""
    if path is None:
        return None
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0
