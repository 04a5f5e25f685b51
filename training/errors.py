"""The exceptions the training package raises; CLIs turn them into one clear line."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class for errors a user of the training CLIs can fix."""


class DatasetError(TrainingError):
    """A dataset folder does not follow the documented layout or has unusable images."""


class CalibrationError(TrainingError):
    """Calibration targets or scores that cannot give thresholds or a gate decision."""


class SamplesError(TrainingError):
    """A labelled-samples source that cannot be read at all (a bad prefix, no access)."""
