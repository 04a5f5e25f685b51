"""Device identity: thing attributes → the lineguard-identity shadow, and moving a station (moto)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stacks import station
from stacks.config import PlantConfig
from stacks.constructs.identity.runtime import identity_sync
from stacks.constructs.identity.runtime.identity_sync import (
    SHADOW,
    IdentityError,
    identity_document,
    sync,
)

REGION = "eu-west-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        iot = boto3.client("iot", region_name=REGION)
        yield {"iot": iot, "iot_data": boto3.client("iot-data", region_name=REGION)}


def provision(iot: Any, demo: PlantConfig, serial: str, line: str, station_name: str) -> str:
    """What fleet provisioning leaves behind: the thing, its attributes, its line group."""
    thing = demo.thing_name(serial)
    for group in {demo.line_group_name(line.name) for line in demo.lines}:
        with contextlib.suppress(iot.exceptions.ResourceAlreadyExistsException):
            iot.create_thing_group(thingGroupName=group)
    iot.create_thing(
        thingName=thing,
        attributePayload={"attributes": {"line": line, "station": station_name, "cameras": "1"}},
    )
    iot.add_thing_to_thing_group(thingGroupName=demo.line_group_name(line), thingName=thing)
    return thing


def shadow_desired(iot_data: Any, thing: str) -> dict[str, Any]:
    payload = iot_data.get_thing_shadow(thingName=thing, shadowName=SHADOW)["payload"].read()
    return json.loads(payload)["state"]["desired"]


def test_identity_comes_from_the_attributes() -> None:
    attributes = {"line": "line-1", "station": "press-out", "cameras": "2"}
    assert identity_document("demo", "lineguard-demo-DEMO-0001", attributes) == {
        "v": 1,
        "thing": "lineguard-demo-DEMO-0001",
        "plant": "demo",
        "line": "line-1",
        "station": "press-out",
        "cameras": 2,
    }


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"line": "line-1", "cameras": "1"}, "station are missing"),
        ({"line": "line-1", "station": "s", "cameras": "x"}, "not a number"),
    ],
)
def test_a_thing_without_a_full_identity_is_named(attributes: dict[str, str], message: str) -> None:
    with pytest.raises(IdentityError, match=f"lineguard-demo-X.*{message}"):
        identity_document("demo", "lineguard-demo-X", attributes)


def test_sync_writes_the_shadow_once(aws: dict[str, Any], demo: PlantConfig) -> None:
    thing = provision(aws["iot"], demo, "DEMO-0001", "line-1", "press-out")
    written = sync(aws["iot"], aws["iot_data"], "demo", thing)
    assert written is not None and written["station"] == "press-out"
    assert shadow_desired(aws["iot_data"], thing) == written
    assert sync(aws["iot"], aws["iot_data"], "demo", thing) is None  # unchanged: no write


def test_handler_syncs_only_this_plants_things(
    aws: dict[str, Any], demo: PlantConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLANT", "demo")
    thing = provision(aws["iot"], demo, "DEMO-0002", "line-1", "final-check")
    assert identity_sync.handler({"thing": thing}, None) == {"synced": True}
    assert shadow_desired(aws["iot_data"], thing)["station"] == "final-check"
    assert identity_sync.handler({"thing": "lineguard-other-X"}, None) == {"synced": False}
    aws["iot"].create_thing(thingName="lineguard-demo-BARE")
    answer = identity_sync.handler({"thing": "lineguard-demo-BARE"}, None)
    assert answer["synced"] is False and "missing" in answer["error"]


def test_moving_a_station_changes_attributes_group_and_shadow(
    aws: dict[str, Any], demo: PlantConfig
) -> None:
    thing = provision(aws["iot"], demo, "DEMO-0001", "line-1", "press-out")
    sync(aws["iot"], aws["iot_data"], "demo", thing)
    result = station.move_station(
        demo, "DEMO-0001", "line-1", "final-check", iot=aws["iot"], iot_data=aws["iot_data"]
    )
    assert result["changed"] is True
    attributes = aws["iot"].describe_thing(thingName=thing)["attributes"]
    assert (attributes["station"], attributes["cameras"]) == ("final-check", "2")
    assert len(attributes) <= 3  # a thing without a thing type has at most three
    assert shadow_desired(aws["iot_data"], thing)["station"] == "final-check"
    again = station.move_station(
        demo, "DEMO-0001", "line-1", "final-check", iot=aws["iot"], iot_data=aws["iot_data"]
    )
    assert again["changed"] is False


def test_moving_to_another_line_moves_the_thing_group(
    aws: dict[str, Any], two_line_plant: PlantConfig
) -> None:
    plant = two_line_plant
    thing = provision(aws["iot"], plant, "DEMO-0001", "line-1", "press-out")
    station.move_station(
        plant, "DEMO-0001", "line-2", "sorter", iot=aws["iot"], iot_data=aws["iot_data"]
    )
    groups = aws["iot"].list_thing_groups_for_thing(thingName=thing)["thingGroups"]
    assert [g["groupName"] for g in groups] == [plant.line_group_name("line-2")]
    assert shadow_desired(aws["iot_data"], thing)["line"] == "line-2"


@pytest.fixture
def two_line_plant(demo: PlantConfig) -> PlantConfig:
    data = demo.model_dump()
    data["lines"] = [*data["lines"], {"name": "line-2", "stations": [{"name": "sorter"}]}]
    return type(demo).model_validate(data)


def test_the_command_refuses_unknown_stations_and_unprovisioned_devices(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--plant", "demo", "--serial", "DEMO-0001", "--line", "line-1"]
    assert station.main([*base, "--station", "paint"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: plant demo: line line-1 has no station 'paint'")
    assert station.main([*base, "--station", "press-out"]) == 1
    assert "lineguard-demo-DEMO-0001 does not exist" in capsys.readouterr().err
    assert station.main(["--plant", "nowhere", *base[2:], "--station", "x"]) == 2


def test_the_command_moves_a_provisioned_device(
    aws: dict[str, Any], demo: PlantConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    provision(aws["iot"], demo, "DEMO-0001", "line-1", "press-out")
    argv = ["--plant", "demo", "--serial", "DEMO-0001", "--line", "line-1"]
    assert station.main([*argv, "--station", "final-check"]) == 0
    assert capsys.readouterr().out == "lineguard-demo-DEMO-0001: now line-1/final-check\n"
