"""Wiring: configuration → controller + subscriber + bridge, run until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from typing import Any

from line_bridge import COMPONENT_NAME
from line_bridge.bridge import Bridge
from line_bridge.config import BridgeConfig, ComponentConfig, parse_component_config
from line_bridge.controller import LineController
from line_bridge.errors import BridgeError
from line_bridge.identity import IdentityReader, shadow_topics
from line_bridge.messages import format_ts
from line_bridge.subscribers import (
    ConfigValidator,
    ConfigWatcher,
    IpcSubscriber,
    MqttSubscriber,
    Subscriber,
    TopicWatcher,
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
        return IpcSubscriber(ipc_client, config.stations, bridge.handle_message, config.verdicts)
    return MqttSubscriber(
        config.transport, config.stations, bridge.handle_message, verdicts=config.verdicts
    )


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


async def serve_greengrass(
    client: Any, *, stop: asyncio.Event | None = None, thing: str | None = None
) -> BridgeConfig | None:
    """Run under Greengrass: configuration from IPC, station from the identity shadow.

    Every configuration update is validated before the nucleus applies it (REJECTED with the
    field at fault) and re-read after; an invalid one is refused and the last good one keeps
    running. In the per-station form the station comes from the identity shadow, re-read when
    ShadowManager reports a change and every ``identity_poll_s``; without an identity, or
    without settings for its station, no station is written healthy and the health message
    says why. Applying a change restarts the bridge in-process (every station written
    unhealthy first). Returns the last configuration that ran (None if none did).
    """
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def poke() -> None:
        loop.call_soon_threadsafe(changed.set)

    configs = parse_component_config(read_ipc_configuration(client), "component configuration")
    thing = thing or os.environ.get("AWS_IOT_THING_NAME")
    if configs.by_identity and not thing:
        # the nucleus sets it for every component process (recipe reference, environment)
        raise BridgeError("AWS_IOT_THING_NAME is not set: cannot read the identity shadow")
    watchers: list[Any] = [
        ConfigWatcher(client, poke),
        ConfigValidator(
            client, lambda doc: parse_component_config(doc, "proposed component configuration")
        ),
    ]
    if thing:
        watchers.append(TopicWatcher(client, shadow_topics(thing), poke))
    reader = IdentityReader(client, thing or "")
    ran: BridgeConfig | None = None
    last_reason: str | None = None
    try:
        for watcher in watchers:
            watcher.start()
        while not stop.is_set():
            config, reason = await _resolve(configs, reader)
            if config is None:
                if reason != last_reason:
                    log.error("line bridge not signalling inspection healthy: %s", reason)
                    last_reason = reason
                _publish_no_station(client, configs, thing, reason)
                poll = next(iter(configs.by_station.values())).identity_poll_s
                await _first(stop, changed, None, timeout=poll)
                changed.clear()
                configs = _reread(client, configs)
                continue
            last_reason = None
            run_stop = asyncio.Event()
            task = asyncio.create_task(
                serve(config, ipc_client=client, stop=run_stop, handle_signals=False)
            )
            ran = config
            while True:
                await _first(stop, changed, task, timeout=config.identity_poll_s)
                if stop.is_set() or task.done():
                    break
                changed.clear()
                configs = _reread(client, configs)
                update, _ = await _resolve(configs, reader)
                if update != config:
                    log.info("configuration or identity changed; restarting the bridge with it")
                    break
            run_stop.set()
            await task  # re-raises what made serve() fail
    finally:
        for watcher in watchers:
            watcher.stop()
    return ran


async def _resolve(
    configs: ComponentConfig, reader: IdentityReader
) -> tuple[BridgeConfig | None, str | None]:
    """The configuration to run now, or None and why not (no identity, unknown station)."""
    if not configs.by_identity:
        return configs.explicit, None
    try:
        identity = await asyncio.to_thread(reader.read)
        return configs.for_station(identity.station), None
    except BridgeError as exc:
        return None, str(exc)


def _reread(client: Any, configs: ComponentConfig) -> ComponentConfig:
    try:
        return parse_component_config(
            read_ipc_configuration(client), "component configuration update"
        )
    except BridgeError as exc:
        log.error("configuration update refused, keeping the last good one: %s", exc)
        return configs


def _publish_no_station(
    client: Any, configs: ComponentConfig, thing: str | None, reason: str | None
) -> None:
    """Tell the plant why no station is served: the bridge has nothing it may write to."""
    any_config = next(iter(configs.by_station.values()))
    doc = {
        "v": 1,
        "component": COMPONENT_NAME,
        "device": thing or any_config.device,
        "ts": format_ts(time.time()),
        "identity": None,
        "reason": reason,
        "plc": {"connected": False, "last_error": reason},
        "stations": {},
    }
    try:
        from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage

        message = PublishMessage(
            binary_message=BinaryMessage(message=json.dumps(doc, separators=(",", ":")).encode())
        )
        client.publish_to_topic_async(topic=any_config.health_topic, publish_message=message)
    except Exception as exc:  # noqa: BLE001 - health is best effort
        log.warning("could not publish bridge health: %s", exc)


async def _first(
    stop: asyncio.Event,
    changed: asyncio.Event,
    task: asyncio.Task[Any] | None,
    timeout: float | None = None,
) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(changed.wait())]
    try:
        await asyncio.wait(
            [*waiters, *([task] if task else [])],
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
