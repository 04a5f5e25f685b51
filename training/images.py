"""Image files as a sequence of model input tensors, decoded on access, never all held.

Training reads a dataset of any size through :class:`ImageTensors`: each item is decoded and
converted by :func:`training.scoring.load_tensor` (the device's ``to_tensor``) when it is read,
so only the batch being worked on is in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from inspector.model_package import FrameSpec, InputSpec
from training.scoring import load_tensor, score_tensors


class ImageTensors(Sequence[np.ndarray]):
    """The input tensors of ``paths``, each loaded when it is read (a slice loads a list)."""

    def __init__(
        self, paths: Sequence[Path], spec: InputSpec, frames: FrameSpec | None = None
    ) -> None:
        self.paths, self.spec, self.frames = list(paths), spec, frames

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, key: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, key: slice) -> list[np.ndarray]: ...
    def __getitem__(self, key: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(key, slice):
            return [load_tensor(p, self.spec, self.frames) for p in self.paths[key]]
        return load_tensor(self.paths[key], self.spec, self.frames)


def score_images(
    session: Any,
    input_name: str,
    tensors: Sequence[np.ndarray],
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """ONNX Runtime image scores ``(N,)`` of ``tensors``, read one batch at a time."""
    scores = [np.zeros(0, np.float32)]
    for start in range(0, len(tensors), batch_size):
        scores.append(score_tensors(session, input_name, tensors[start : start + batch_size])[0])
        if progress is not None:
            progress(min(start + batch_size, len(tensors)), len(tensors))
    return np.concatenate(scores)
