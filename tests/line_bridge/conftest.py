"""Helpers for the line-bridge tests: message builders and a bridge run against a real PLC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from line_bridge.bridge import Bridge
from line_bridge.config import parse_config
from line_bridge.messages import format_ts
from line_bridge.service import build_controller


def heartbeat(station: str, seq: int = 1, healthy: bool = True) -> bytes:
    """A contract heartbeat payload."""
    return json.dumps(
        {
            "v": 1,
            "station": station,
            "device": "core-1",
            "ts": format_ts(time.time()),
            "seq": seq,
            "healthy": healthy,
            "model": "tiny@1.0.0",
            "interval_s": 0.1,
        }
    ).encode()


def result(station: str, part_id: str, decision: str = "reject", seq: int = 1) -> bytes:
    """A contract result message (v1) as published on the reject topic."""
    return json.dumps(
        {
            "v": 1,
            "plant": "demo",
            "line": "line-1",
            "station": station,
            "device": "core-1",
            "camera": "cam-1",
            "part_id": part_id,
            "seq": seq,
            "ts": format_ts(time.time()),
            "decision": decision,
            "score": 0.3,
            "threshold": 0.2,
            "model": "tiny@1.0.0",
            "latency_ms": 3.1,
        }
    ).encode()


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 10 ms; return the seconds it took, fail the test on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@asynccontextmanager
async def running_bridge(
    controller_config: dict[str, Any], **settings: Any
) -> AsyncIterator[Bridge]:
    """A bridge writing to ``controller_config``'s PLC, fed directly through ``handle_message``."""
    doc = {"controller": controller_config, "heartbeat_window_s": 0.6, "refresh_interval_s": 0.3}
    doc.update(settings)
    config = parse_config(doc, "test")
    bridge = Bridge(config, build_controller(config))
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    await asyncio.sleep(0)
    try:
        yield bridge
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class Beater:
    """Publishes heartbeats for a station every 100 ms in the background until stopped."""

    def __init__(self, bridge: Bridge, station: str, healthy: bool = True) -> None:
        self.bridge, self.station, self.healthy = bridge, station, healthy
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        seq = 0
        while True:
            seq += 1
            self.bridge.handle_message(
                f"lineguard/local/{self.station}/heartbeat",
                heartbeat(self.station, seq, self.healthy),
            )
            await asyncio.sleep(0.1)

    def start(self) -> Beater:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
