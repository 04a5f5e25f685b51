"""The line bridge's exceptions: one base type, one per kind of failure."""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of every error the line bridge raises on purpose."""


class ConfigError(BridgeError, ValueError):
    """The bridge configuration is invalid; the message names the source and the field."""

    def __init__(self, where: str, field_path: str, message: str) -> None:
        self.where = where
        self.field_path = field_path
        self.reason = message
        super().__init__(
            f"{where}: {field_path}: {message}" if field_path else f"{where}: {message}"
        )


class MessageError(BridgeError, ValueError):
    """A local reject or heartbeat message does not follow the contract."""


class ControllerError(BridgeError):
    """The line controller (PLC) could not be reached or refused a write."""


class IdentityError(BridgeError):
    """The device's identity shadow is missing, unreadable or breaks the identity contract."""
