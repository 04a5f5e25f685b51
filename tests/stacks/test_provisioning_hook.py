"""Pre-provisioning hook: serial checks, allow-list, line check, deterministic ring assignment."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from stacks.config import PlantConfig
from stacks.constructs.provisioning import hook_settings
from stacks.constructs.provisioning.runtime import hook

DEMO_0001 = {"SerialNumber": "DEMO-0001", "LineName": "line-1", "StationName": "press-out"}


def settings(plant: PlantConfig) -> hook.HookSettings:
    return hook.HookSettings.from_dict(hook_settings(plant))


def test_same_serial_always_gets_the_same_ring(large: PlantConfig) -> None:
    rings = [(r.name, r.percent) for r in large.rings]
    first = [hook.assign_ring("example-large", f"LG01-{i:08X}", rings) for i in range(200)]
    again = [hook.assign_ring("example-large", f"LG01-{i:08X}", rings) for i in range(200)]
    assert first == again


def test_ring_sizes_follow_the_percentages_over_10000_serials(large: PlantConfig) -> None:
    rings = [(r.name, r.percent) for r in large.rings]
    counts = Counter(hook.assign_ring(large.name, f"LG01-{i:08X}", rings) for i in range(10_000))
    # binomial standard deviations at n=10,000: canary ~10, early ~30, broad ~31; allow ~4 sigma
    assert abs(counts["canary"] - 100) <= 40
    assert abs(counts["early"] - 1000) <= 120
    assert abs(counts["broad"] - 8900) <= 125
    assert sum(counts.values()) == 10_000


def test_assignment_depends_on_the_plant(demo: PlantConfig) -> None:
    rings = [(r.name, r.percent) for r in demo.rings]
    a = [hook.assign_ring("plant-a", f"S{i:06d}", rings) for i in range(500)]
    b = [hook.assign_ring("plant-b", f"S{i:06d}", rings) for i in range(500)]
    assert a != b


def test_position_is_in_range() -> None:
    positions = [hook.ring_position("p", f"s{i}") for i in range(2000)]
    assert min(positions) >= 0 and max(positions) < 100
    assert min(positions) < 1 and max(positions) > 99


def test_allowed_device_gets_its_ring_as_parameter_override(demo: PlantConfig) -> None:
    answer = hook.decide(settings(demo), DEMO_0001)
    assert answer["allowProvisioning"] is True
    ring = answer["parameterOverrides"]["RingName"]
    assert ring == hook.assign_ring("demo", "DEMO-0001", [("canary", 50), ("fleet", 50)])


def test_allowed_device_gets_its_stations_camera_count(demo: PlantConfig) -> None:
    answer = hook.decide(settings(demo), {**DEMO_0001, "StationName": "final-check"})
    assert answer["parameterOverrides"]["CameraCount"] == "2"


@pytest.mark.parametrize(
    ("serial", "line", "station"),
    [
        ("DEMO-1", "line-1", "press-out"),  # wrong serial format
        ("DEMO-0001\n", "line-1", "press-out"),  # trailing newline must not sneak past "$"
        ("DEMO-0003", "line-1", "press-out"),  # right format, not on the allow-list
        ("DEMO-0002", "line-9", "press-out"),  # unknown line
        ("DEMO-0002", "line-1", "paint"),  # unknown station
        ("DEMO-0002", "line-1", ""),  # no station
        ("", "", ""),
    ],
)
def test_refused_devices(demo: PlantConfig, serial: str, line: str, station: str) -> None:
    parameters = {"SerialNumber": serial, "LineName": line, "StationName": station}
    assert hook.decide(settings(demo), parameters) == {"allowProvisioning": False}


@pytest.mark.parametrize("serial", ["A*", "A?B", "A+B", "A#B", "A/B", "A:B", 'A"B', "A$B"])
def test_serials_with_policy_or_topic_characters_are_refused(
    large: PlantConfig, serial: str
) -> None:
    # The serial is written into the device's IoT policy and topics: a wildcard or a quote there
    # would widen the policy or break its JSON, whatever the plant's serial pattern allows.
    wide = hook.HookSettings.from_dict({**hook_settings(large), "serial_pattern": ".+"})
    answer = hook.decide(
        wide,
        {
            "SerialNumber": serial,
            "LineName": "line-01",
            "StationName": large.lines[0].stations[0].name,
        },
    )
    assert answer == {"allowProvisioning": False}


def test_without_allow_list_any_well_formed_serial_joins(large: PlantConfig) -> None:
    station = large.lines[-1].stations[0].name
    parameters = {"SerialNumber": "LG07-00C0FFEE", "LineName": "line-40", "StationName": station}
    answer = hook.decide(settings(large), parameters)
    assert answer["allowProvisioning"] is True
    assert answer["parameterOverrides"]["RingName"] in large.ring_names


def test_handler_reads_the_plant_file_beside_it(
    demo: PlantConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    staged = tmp_path / "plant.json"
    staged.write_text(json.dumps(hook_settings(demo)))
    monkeypatch.setattr(hook, "SETTINGS_FILE", staged)
    event = {
        "claimCertificateId": "abc",
        "certificateId": "def",
        "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/x",
        "parameters": {
            "SerialNumber": "DEMO-0002",
            "LineName": "line-1",
            "StationName": "press-out",
        },
    }
    assert hook.handler(event, None)["allowProvisioning"] is True
    assert hook.handler({"parameters": "junk"}, None) == {"allowProvisioning": False}
