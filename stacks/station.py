"""Move a provisioned core device to another line or station: its identity, in one command.

python -m stacks.station --plant NAME --serial SERIAL --line LINE --station STATION

Checks the line and station against the plant file, then sets the thing's ``line``, ``station``
and ``cameras`` attributes, moves it to the new line's thing group and writes its
``lineguard-identity`` shadow, which ShadowManager brings to the device (docs/identity.md). The
ring, and so what the device runs, does not change. Uses the default AWS credentials and the
plant's region.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from stacks.config import PLANTS_DIR, PlantConfig, PlantConfigError, load_plants
from stacks.constructs.identity.runtime.identity_sync import IdentityError, sync


class StationMoveError(RuntimeError):
    """The move cannot be made: unknown line or station, or a thing that is not provisioned."""


def move_station(
    plant: PlantConfig, serial: str, line: str, station: str, *, iot: Any, iot_data: Any
) -> dict[str, Any]:
    """Give the device with ``serial`` the identity of ``station`` on ``line``; the new identity."""
    lines = {item.name: item for item in plant.lines}
    if line not in lines:
        raise StationMoveError(
            f"plant {plant.name}: no line {line!r} (lines: {', '.join(sorted(lines))})"
        )
    stations = {s.name: s for s in lines[line].stations}
    if station not in stations:
        raise StationMoveError(
            f"plant {plant.name}: line {line} has no station {station!r} "
            f"(stations: {', '.join(sorted(stations))})"
        )
    thing = plant.thing_name(serial)
    try:
        described = iot.describe_thing(thingName=thing)
    except iot.exceptions.ResourceNotFoundException:
        raise StationMoveError(
            f"thing {thing} does not exist: provision the device first"
        ) from None
    old_line = described.get("attributes", {}).get("line")
    iot.update_thing(
        thingName=thing,
        attributePayload={
            "attributes": {
                "line": line,
                "station": station,
                "cameras": str(stations[station].cameras),
            },
            "merge": True,
        },
    )
    if old_line != line:
        iot.add_thing_to_thing_group(thingGroupName=plant.line_group_name(line), thingName=thing)
        if old_line:
            iot.remove_thing_from_thing_group(
                thingGroupName=plant.line_group_name(old_line), thingName=thing
            )
    try:
        written = sync(iot, iot_data, plant.name, thing)
    except IdentityError as err:
        raise StationMoveError(str(err)) from None
    if written is None:  # already the identity the shadow holds
        return {"thing": thing, "line": line, "station": station, "changed": False}
    return {**written, "changed": True}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Command-line entry point."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m stacks.station",
        description="Move a provisioned core device to another line or station.",
    )
    parser.add_argument("--plant", required=True, help="plant name (plants/<plant>.yaml)")
    parser.add_argument("--serial", required=True, help="the device's serial number")
    parser.add_argument("--line", required=True, help="the line it now inspects")
    parser.add_argument("--station", required=True, help="the station on that line")
    parser.add_argument("--plants-dir", default=str(PLANTS_DIR))
    args = parser.parse_args(argv)
    try:
        (plant,) = load_plants(args.plants_dir, [args.plant])
    except PlantConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import boto3

    iot = boto3.client("iot", region_name=plant.region)
    iot_data = boto3.client("iot-data", region_name=plant.region)
    try:
        result = move_station(
            plant, args.serial, args.line, args.station, iot=iot, iot_data=iot_data
        )
    except StationMoveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    what = "now" if result["changed"] else "already"
    out.write(f"{result['thing']}: {what} {args.line}/{args.station}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
