"""The rollout package's exceptions; the CLI maps each to one exit code."""

from __future__ import annotations


class RolloutError(Exception):
    """Base class of every error the rollout package raises on purpose."""


class BadInputError(RolloutError):
    """The command line, plant file, release file or model package is wrong (exit code 2)."""


class AwsError(RolloutError):
    """An AWS call failed; the message names the service, operation and resource (exit code 3)."""


class StateError(RolloutError):
    """The persisted controller state does not fit the promotion asked for (exit code 2)."""
