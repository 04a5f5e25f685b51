"""``python -m line_bridge``: run the bridge, or check a configuration file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from line_bridge import COMPONENT_NAME
from line_bridge.config import BridgeConfig, load_config
from line_bridge.errors import BridgeError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m line_bridge",
        description=f"{COMPONENT_NAME}: inspector reject/heartbeat messages -> PLC signals.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bridge until SIGTERM/SIGINT")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="configuration file (JSON or YAML); messages over MQTT")
    source.add_argument(
        "--greengrass",
        action="store_true",
        help="under Greengrass: configuration and local pub/sub through IPC",
    )
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    check = sub.add_parser("check-config", help="validate a configuration file and summarise it")
    check.add_argument("config", help="configuration file (JSON or YAML)")
    return parser


def _summary(config: BridgeConfig) -> dict[str, object]:
    return {
        "protocol": config.controller.protocol,
        "endpoint": config.controller.endpoint,
        "secured": config.controller.security is not None,
        "stations": list(config.stations),
        "transport": config.transport.kind,
        "heartbeat_window_s": config.heartbeat_window_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            print(json.dumps(_summary(load_config(args.config))))
            return 0
        logging.basicConfig(
            level=args.log_level,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        from line_bridge.service import serve, serve_greengrass

        if args.greengrass:
            from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

            try:
                client = GreengrassCoreIPCClientV2()
            except Exception as exc:  # noqa: BLE001 - no nucleus: one clear line
                raise BridgeError(
                    f"cannot connect to the Greengrass nucleus (IPC): {exc}"
                ) from None
            asyncio.run(serve_greengrass(client))
        else:
            asyncio.run(serve(load_config(args.config)))
        return 0
    except BridgeError as exc:
        print(f"line_bridge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
