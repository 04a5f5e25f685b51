"""Wiring: configuration → controller + subscriber + bridge, run until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from line_bridge.bridge import Bridge
from line_bridge.config import BridgeConfig, parse_config
from line_bridge.controller import LineController
from line_bridge.errors import BridgeError
from line_bridge.subscribers import (
    ConfigWatcher,
    IpcSubscriber,
    MqttSubscriber,
    Subscriber,
    read_ipc_configuration,
)

log = logging.getLogger(__name__)


def build_controller(config: BridgeConfig) -> LineController:
    """The :class:`LineController` for the configured protocol."""
    if config.controller.protocol == "opcua":
        from line_bridge.opcua import OpcUaController

        return OpcUaController(config.controller)
    from line_bridge.modbus import ModbusController

    return ModbusController(config.controller)


def build_subscriber(config: BridgeConfig, bridge: Bridge, ipc_client: Any = None) -> Subscriber:
    """The message source: IPC when a Greengrass client is given, else MQTT from the config."""
    if ipc_client is not None:
        return IpcSubscriber(ipc_client, config.stations, bridge.handle_message)
    return MqttSubscriber(config.transport, config.stations, bridge.handle_message)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # not available outside the main thread: the caller sets ``stop`` then
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


async def serve(
    config: BridgeConfig,
    *,
    controller: LineController | None = None,
    ipc_client: Any = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> Bridge:
    """Run the bridge until ``stop`` is set (or SIGTERM/SIGINT); return it for inspection."""
    stop = stop or asyncio.Event()
    if handle_signals:
        _stop_on_signals(stop)
    bridge = Bridge(config, controller or build_controller(config))
    bridge.attach()
    subscriber = build_subscriber(config, bridge, ipc_client)
    bridge.publish = subscriber.publish
    runner = asyncio.create_task(bridge.run(stop))
    try:
        await asyncio.to_thread(subscriber.start)
        log.info(
            "line bridge running: %d station(s) %s, PLC %s %s, heartbeat window %g s",
            len(config.stations),
            ", ".join(config.stations),
            config.controller.protocol,
            config.controller.endpoint,
            config.heartbeat_window_s,
        )
        await runner
    finally:
        stop.set()
        if not runner.done():
            await runner
        await asyncio.to_thread(subscriber.stop)
    return bridge


async def serve_greengrass(client: Any, *, stop: asyncio.Event | None = None) -> BridgeConfig:
    """Run under Greengrass: configuration from IPC, re-applied live on every valid update.

    An invalid update is refused (logged with the field at fault) and the last good
    configuration keeps running. Applying a valid one restarts the bridge in-process: it writes
    every station unhealthy, then starts over with the new PLC map. Returns the last config.
    """
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    config = parse_config(read_ipc_configuration(client), "component configuration")
    watcher = ConfigWatcher(client, lambda: loop.call_soon_threadsafe(changed.set))
    watcher.start()
    try:
        while not stop.is_set():
            run_stop = asyncio.Event()
            task = asyncio.create_task(
                serve(config, ipc_client=client, stop=run_stop, handle_signals=False)
            )
            while True:
                await _first(stop, changed, task)
                if stop.is_set() or task.done():
                    break
                changed.clear()
                try:
                    update = parse_config(
                        read_ipc_configuration(client), "component configuration update"
                    )
                except BridgeError as exc:
                    log.error("configuration update refused, keeping the last good one: %s", exc)
                    continue
                if update != config:
                    log.info("configuration updated; restarting the bridge with it")
                    config = update
                    break
            run_stop.set()
            await task  # re-raises what made serve() fail
    finally:
        watcher.stop()
    return config


async def _first(stop: asyncio.Event, changed: asyncio.Event, task: asyncio.Task[Any]) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(changed.wait())]
    try:
        await asyncio.wait([*waiters, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
