"""Image files as a sequence of model input tensors, decoded on access, never all held.

Training reads a dataset of any size through :class:`ImageTensors`: a frame is decoded and
converted by :func:`training.scoring.load_frame` (the device's ``frame_tensors``) when one of
its tiles is read, so only the batch being worked on is in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np

from inspector.model_package import FrameSpec, InputSpec
from training.errors import DatasetError
from training.scoring import load_frame


class ImageTensors(Sequence[np.ndarray]):
    """Every tile of every frame of ``paths`` as an input tensor ``(C, H, W)``, frame by frame.

    A frame is decoded when one of its tiles is read; the last decoded frame is kept, so reading
    its tiles in order decodes it once (a slice returns a list).
    """

    def __init__(
        self, paths: Sequence[Path], spec: InputSpec, frames: FrameSpec | None = None
    ) -> None:
        self.paths, self.spec, self.frames = list(paths), spec, frames
        self.per_frame = spec.tiles.count if spec.tiles is not None else 1
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.paths) * self.per_frame

    @overload
    def __getitem__(self, key: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, key: slice) -> list[np.ndarray]: ...
    def __getitem__(self, key: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(key, slice):
            return [self._tile(i) for i in range(len(self))[key]]
        if not -len(self) <= key < len(self):
            raise IndexError(f"tile {key} of {len(self)}")
        return self._tile(key % len(self))

    def _tile(self, index: int) -> np.ndarray:
        frame, tile = divmod(index, self.per_frame)
        if self._last is None or self._last[0] != frame:
            path = self.paths[frame]
            tiles = load_frame(path, self.spec, self.frames)
            if len(tiles) != self.per_frame:
                raise DatasetError(f"{path}: {len(tiles)} tiles, the input takes {self.per_frame}")
            self._last = (frame, tiles)
        tiles = self._last[1]
        # a copy of one tile, so a kept tile does not keep its whole frame alive
        return tiles[tile].copy() if self.per_frame > 1 else tiles[0]
