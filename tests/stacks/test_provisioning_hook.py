"""Pre-provisioning hook: serial checks, allow-list, line check, deterministic ring assignment."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from stacks.config import PlantConfig
from stacks.constructs.provisioning import hook_environment, hook_lines
from stacks.constructs.provisioning.runtime import hook


def settings(plant: PlantConfig) -> hook.HookSettings:
    return hook.HookSettings.from_env(hook_environment(plant), json.loads(hook_lines(plant)))


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
    answer = hook.decide(settings(demo), {"SerialNumber": "DEMO-0001", "LineName": "line-1"})
    assert answer["allowProvisioning"] is True
    ring = answer["parameterOverrides"]["RingName"]
    assert ring == hook.assign_ring("demo", "DEMO-0001", [("canary", 50), ("fleet", 50)])


@pytest.mark.parametrize(
    ("serial", "line"),
    [
        ("DEMO-1", "line-1"),  # wrong serial format
        ("DEMO-0001\n", "line-1"),  # trailing newline must not sneak past "$"
        ("DEMO-0003", "line-1"),  # right format, not on the allow-list
        ("DEMO-0002", "line-9"),  # unknown line
        ("", ""),
    ],
)
def test_refused_devices(demo: PlantConfig, serial: str, line: str) -> None:
    answer = hook.decide(settings(demo), {"SerialNumber": serial, "LineName": line})
    assert answer == {"allowProvisioning": False}


def test_without_allow_list_any_well_formed_serial_joins(large: PlantConfig) -> None:
    answer = hook.decide(settings(large), {"SerialNumber": "LG07-00C0FFEE", "LineName": "line-40"})
    assert answer["allowProvisioning"] is True
    assert answer["parameterOverrides"]["RingName"] in large.ring_names


def test_lines_file_round_trips_and_junk_is_refused(large: PlantConfig, tmp_path: Path) -> None:
    path = tmp_path / hook.LINES_FILE
    path.write_text(hook_lines(large))
    assert hook.read_lines(path) == tuple(line.name for line in large.lines)
    path.write_text('{"line-01": 1}')
    with pytest.raises(ValueError, match="JSON list of line names"):
        hook.read_lines(path)


def test_environment_stays_small_whatever_the_line_count(large: PlantConfig) -> None:
    many = large.model_copy(update={"lines": large.lines * 50})  # 2,000 (duplicate) lines
    env = hook_environment(many)
    # Lambda: all environment variables together at most 4 KB (gettingstarted-limits.html)
    assert sum(len(k) + len(v) for k, v in env.items()) < 1024
    assert len(json.loads(hook_lines(many))) == 2000


def test_handler_reads_the_lambda_environment(
    demo: PlantConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in hook_environment(demo).items():
        monkeypatch.setenv(key, value)
    # what hook_code() bundles beside hook.py (tests/stacks/test_constructs.py runs the staged copy)
    monkeypatch.setattr(hook, "_bundled_lines", lambda: tuple(json.loads(hook_lines(demo))))
    event = {
        "claimCertificateId": "abc",
        "certificateId": "def",
        "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/x",
        "parameters": {"SerialNumber": "DEMO-0002", "LineName": "line-1"},
    }
    assert hook.handler(event, None)["allowProvisioning"] is True
    assert hook.handler({"parameters": "junk"}, None) == {"allowProvisioning": False}
