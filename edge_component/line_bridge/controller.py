"""The line controller interface the bridge writes to, whatever the PLC's protocol."""

from __future__ import annotations

import abc

COUNTER_MODULO = 1 << 16  # the reject counter wraps like a 16-bit PLC register


class LineController(abc.ABC):
    """A PLC seen as per-station signals: "inspection healthy" and a reject command.

    Every method raises :class:`line_bridge.errors.ControllerError` when the PLC cannot be
    reached or refuses the write; the bridge then reconnects with :meth:`connect`.
    """

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the session and read each station's reject counter so it continues, not restarts."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the session; never raises."""

    @abc.abstractmethod
    async def write_healthy(self, station: str, healthy: bool) -> None:
        """Write the station's "inspection healthy" signal."""

    @abc.abstractmethod
    async def write_reject(self, station: str, part_id: str, code: int) -> int:
        """Write one reject command (part id, decision code, then the next counter value).

        Returns the counter value written; the PLC acts on each counter change.
        """

    @abc.abstractmethod
    async def write_alive(self, station: str, counter: int) -> None:
        """Write the bridge's alive counter if the station has one configured (else no-op)."""


def next_counter(value: int) -> int:
    """The counter after ``value``, wrapping at 16 bits and skipping 0 (0 means "never")."""
    nxt = (value + 1) % COUNTER_MODULO
    return nxt or 1
