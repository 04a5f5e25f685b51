"""Plant and release files: valid files load; every bad input is one line naming file and field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.config import (
    AWS_COMPONENTS,
    INSPECTOR,
    LINE_BRIDGE,
    LINE_STACKS,
    LOG_MANAGER,
    MAX_LINES,
    MAX_LINES_PER_STACK,
    MODEL,
    NUCLEUS,
    SHADOW_MANAGER,
    Calibration,
    Gates,
    PlantConfig,
    PlantConfigError,
    Release,
    ReleaseError,
    initial_release,
    line_stack,
    load_plant,
    load_plant_release,
    load_plants,
    load_release,
    parse_plant,
    parse_release,
    release_path,
    strictest_calibration,
    write_release,
)

from .conftest import PLANTS, RELEASES

DEMO_DOC: dict[str, Any] = yaml.safe_load((PLANTS / "demo.yaml").read_text())
WHERE = "plants/demo.yaml"


def mutated(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    doc = copy.deepcopy(DEMO_DOC)
    change(doc)
    return doc


def test_shipped_plants_load_with_their_shapes(demo: PlantConfig, large: PlantConfig) -> None:
    assert (len(demo.lines), demo.station_count, demo.ring_names) == (1, 2, ("canary", "fleet"))
    assert (len(large.lines), large.expected_devices) == (40, 5000)
    assert [(r.name, r.percent) for r in large.rings] == [
        ("canary", 1),
        ("early", 10),
        ("broad", 89),
    ]


def test_plant_objects_are_frozen(demo: PlantConfig) -> None:
    with pytest.raises(ValueError, match="frozen"):
        demo.name = "other"  # type: ignore[misc]


def test_defaults_fill_omitted_sections() -> None:
    doc = mutated(lambda d: [d.pop(k) for k in ("gates", "monitoring", "deployment")])
    plant = parse_plant(doc, WHERE)
    assert plant.gates.max_p99_regression == 1.25
    assert [a.failure_type for a in plant.deployment.abort] == ["FAILED", "TIMED_OUT"]


def test_calibration_defaults_and_the_shipped_targets(
    demo: PlantConfig, large: PlantConfig
) -> None:
    doc = mutated(lambda d: d.pop("calibration"))
    assert parse_plant(doc, WHERE).calibration == Calibration()
    assert Calibration().target_manual_rate <= Gates().max_manual_rate / 2
    assert (demo.calibration.target_false_reject_rate, demo.calibration.target_manual_rate) == (
        0.005,
        0.02,
    )
    assert large.calibration.target_manual_rate <= large.gates.max_manual_rate / 2


def test_a_shared_pipeline_takes_the_strictest_targets(demo: PlantConfig) -> None:
    other = demo.model_copy(
        update={"calibration": Calibration(target_false_reject_rate=0.01, target_manual_rate=0.01)}
    )
    strictest = strictest_calibration([demo, other])
    assert (strictest.target_false_reject_rate, strictest.target_manual_rate) == (0.005, 0.01)
    assert strictest_calibration([]) == Calibration()


def lines_doc(names: Iterable[str]) -> list[dict[str, Any]]:
    return [{"name": name, "stations": [{"name": "check"}]} for name in names]


BAD_PLANTS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("unknown key", lambda d: d.update(colour="red"), "colour: unknown key"),
    ("missing field", lambda d: d.pop("region"), "region: required field is missing"),
    ("bad region", lambda d: d.update(region="europe"), "region: String should match"),
    ("short account", lambda d: d.update(account="12345"), "account: String should match"),
    ("unquoted account", lambda d: d.update(account=123456789012), "account: must be a quoted"),
    (
        "percents not 100",
        lambda d: d["rings"][1].update(percent=40),
        "rings: ring percents must sum to 100 (they sum to 90)",
    ),
    ("negative percent", lambda d: d["rings"][1].update(percent=-1), "rings[1].percent:"),
    (
        "duplicate ring",
        lambda d: d["rings"][1].update(name="canary"),
        "rings: duplicate ring name 'canary'",
    ),
    (
        "duplicate line",
        lambda d: d["lines"].append(copy.deepcopy(d["lines"][0])),
        "lines: duplicate line name 'line-1' (lines[0] and lines[1])",
    ),
    (
        "duplicate station",
        lambda d: d["lines"][0]["stations"].append({"name": "press-out"}),
        "lines[0].stations: duplicate station name 'press-out'",
    ),
    (
        "typo in nested key",
        lambda d: d["lines"][0]["stations"][1].update(camera=2),
        "lines[0].stations[1].camera: unknown key",
    ),
    (
        "unknown abort type",
        lambda d: d["deployment"]["abort"][0].update(failure_type="OOPS"),
        "deployment.abort[0].failure_type:",
    ),
    (
        "rollout base above max",
        lambda d: d["deployment"]["rollout"].update(base_rate_per_minute=100),
        "deployment.rollout: base_rate_per_minute must not exceed maximum_per_minute",
    ),
    (
        "gate out of range",
        lambda d: d["gates"].update(min_healthy_share=1.5),
        "gates.min_healthy_share:",
    ),
    (
        "allow-list serial not matching",
        lambda d: d["provisioning"].update(allow_list=["x"]),
        "provisioning: allow_list[0] 'x' does not match serial_pattern",
    ),
    (
        "unanchored serial pattern",
        lambda d: d["provisioning"].update(serial_pattern="DEMO-.*"),
        "provisioning.serial_pattern: must be anchored",
    ),
    (
        "manual target above the manual gate",
        lambda d: d["calibration"].update(target_manual_rate=0.06),
        "calibration: target_manual_rate 0.06 is above half of gates.max_manual_rate 0.05",
    ),
    (
        "zero false-reject target",
        lambda d: d["calibration"].update(target_false_reject_rate=0),
        "calibration.target_false_reject_rate: Input should be greater than 0",
    ),
    (
        "manual target of a half",
        lambda d: d["calibration"].update(target_manual_rate=0.5),
        "calibration.target_manual_rate: Input should be less than 0.5",
    ),
    (
        "typo in calibration",
        lambda d: d["calibration"].update(target_manual=0.01),
        "calibration.target_manual: unknown key",
    ),
    ("name differs from file", lambda d: d.update(name="other"), "name: 'other' must match"),
    ("no lines", lambda d: d.update(lines=[]), "lines:"),
    (
        "more lines than deploy",
        lambda d: d.update(lines=lines_doc(f"line-{i}" for i in range(MAX_LINES + 1))),
        f"lines: {MAX_LINES + 1} lines, at most {MAX_LINES} can deploy: every line is a thing "
        "group, a CloudFormation resource, and CloudFormation creates at most 2500 resources "
        "in one stack operation",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [(c, e) for _, c, e in BAD_PLANTS], ids=[i for i, _, _ in BAD_PLANTS]
)
def test_bad_plant_is_one_line_naming_file_and_field(
    change: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    with pytest.raises(PlantConfigError) as info:
        parse_plant(mutated(change), WHERE)
    message = str(info.value)
    assert message.startswith(f"{WHERE}: ")
    assert expected in message
    assert "\n" not in message


def test_the_largest_plant_that_deploys_loads() -> None:
    doc = mutated(lambda d: d.update(lines=lines_doc(f"line-{i:04d}" for i in range(MAX_LINES))))
    assert len(parse_plant(doc, WHERE).lines) == MAX_LINES


def test_line_stacks_never_change_for_a_line_name() -> None:
    # A line group that moved to another nested stack would be deleted by the one it left.
    assert [line_stack(n) for n in ("line-1", "line-01", "line-40", "L7")] == [3, 1, 1, 1]
    assert {line_stack(f"line-{i}") for i in range(100)} == set(range(LINE_STACKS))


def test_more_lines_than_one_nested_stack_takes_are_refused() -> None:
    same = [n for n in (f"x{i}" for i in range(5000)) if line_stack(n) == 2]
    doc = mutated(lambda d: d.update(lines=lines_doc(same[: MAX_LINES_PER_STACK + 1])))
    with pytest.raises(PlantConfigError, match=r"lines: 491 line groups fall into one nested"):
        parse_plant(doc, WHERE)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text("name: demo\nlines: [\n")
    with pytest.raises(PlantConfigError, match=r"demo.yaml: not valid YAML at line 3"):
        load_plant(path)


def test_missing_plant_file(tmp_path: Path) -> None:
    with pytest.raises(PlantConfigError, match="plant file not found"):
        load_plant(tmp_path / "nowhere.yaml")


def test_unknown_plant_selection_names_the_known_ones() -> None:
    with pytest.raises(PlantConfigError, match=r"unknown plant 'nope' \(plants: demo, "):
        load_plants(PLANTS, "demo,nope")


def test_selection_loads_only_the_named_plants() -> None:
    assert [p.name for p in load_plants(PLANTS, ["example-large"])] == ["example-large"]
    assert {p.name for p in load_plants(PLANTS)} >= {"demo", "example-large"}


# ------------------------------------------------------------------ releases


def test_shipped_releases_pin_every_ring(demo: PlantConfig, large: PlantConfig) -> None:
    for plant in (demo, large):
        release = load_plant_release(plant, RELEASES)
        for ring in plant.ring_names:
            entry = release.ring(ring)
            assert entry is not None
            assert dict(entry.components) == {
                NUCLEUS: "2.16.1",
                SHADOW_MANAGER: "2.3.12",
                INSPECTOR: "1.0.0",
                LINE_BRIDGE: "1.0.0",
                MODEL: "1.0.0",
            }
            assert entry.configuration[NUCLEUS] == {"interpolateComponentConfiguration": True}
            # the identity shadow, synced from the cloud on every device (docs/identity.md)
            assert entry.configuration[SHADOW_MANAGER] == {
                "synchronize": {
                    "coreThing": {"classic": False, "namedShadows": ["lineguard-identity"]},
                    "direction": "cloudToDevice",
                }
            }


def test_missing_release_file(demo: PlantConfig, tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match=r"demo.json: release file not found"):
        load_plant_release(demo, tmp_path)


def release_doc(**rings: dict[str, Any]) -> dict[str, Any]:
    return {"format": "lineguard.release/1", "plant": "demo", "rings": rings}


GOOD = {"components": {INSPECTOR: "1.0.0", MODEL: "1.0.0"}}
BAD_RELEASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown ring", release_doc(broad=GOOD), "rings.broad: plant 'demo' has no such ring"),
    (
        "missing model",
        release_doc(canary={"components": {INSPECTOR: "1.0.0"}}),
        "rings.canary.components: missing required component(s): com.lineguard.Model",
    ),
    (
        "version range",
        release_doc(canary={"components": {INSPECTOR: "^1.0.0", MODEL: "1.0.0"}}),
        "is not an exact semantic version",
    ),
    (
        "unknown component",
        release_doc(canary={"components": {**GOOD["components"], "com.other.X": "1.0.0"}}),
        "unknown component 'com.other.X'",
    ),
    (
        "configuration for undeployed component",
        release_doc(canary={**GOOD, "configuration": {LINE_BRIDGE: {"x": 1}}}),
        "which this ring does not deploy",
    ),
    (
        "aws component at another version",
        release_doc(canary={"components": {**GOOD["components"], LOG_MANAGER: "2.3.0"}}),
        "aws.greengrass.LogManager: version '2.3.0' is not an allowed pin (allowed: 2.3.11;",
    ),
    (
        "nucleus without interpolation",
        release_doc(canary={"components": {**GOOD["components"], NUCLEUS: "2.16.1"}}),
        "configuration.aws.greengrass.Nucleus.interpolateComponentConfiguration must be true",
    ),
    (
        "nucleus interpolation as a string",
        release_doc(
            canary={
                "components": {**GOOD["components"], NUCLEUS: "2.16.1"},
                "configuration": {NUCLEUS: {"interpolateComponentConfiguration": "true"}},
            }
        ),
        "interpolateComponentConfiguration must be true",
    ),
    (
        "plc endpoint from the ring",
        release_doc(
            canary={
                "components": {**GOOD["components"], LINE_BRIDGE: "1.0.0"},
                "configuration": {LINE_BRIDGE: {"controller": {"endpoint": "opc.tcp://plc:4840"}}},
            }
        ),
        "configuration.com.lineguard.LineBridge.controller: a per-device setting comes from the "
        "device's provisioning",
    ),
    (
        "station from the ring",
        release_doc(canary={**GOOD, "configuration": {INSPECTOR: {"station": "st-1"}}}),
        "configuration.com.lineguard.Inspector.station: a per-device setting",
    ),
    ("unknown key", {**release_doc(canary=GOOD), "extra": 1}, "extra: unknown key"),
    ("wrong format", {**release_doc(), "format": "v2"}, "format:"),
    ("other plant", {**release_doc(), "plant": "other"}, "plant: 'other' is not plant 'demo'"),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [(d, e) for _, d, e in BAD_RELEASES], ids=[i for i, _, _ in BAD_RELEASES]
)
def test_bad_release_is_one_line_naming_file_and_field(
    demo: PlantConfig, doc: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ReleaseError) as info:
        parse_release(doc, "releases/demo.json", demo)
    assert str(info.value).startswith("releases/demo.json: ")
    assert expected in str(info.value)


def test_aws_components_at_their_pins_are_accepted(demo: PlantConfig) -> None:
    pins = {name: AWS_COMPONENTS[name][0] for name in (NUCLEUS, LOG_MANAGER, SHADOW_MANAGER)}
    canary = {
        "components": {**GOOD["components"], **pins},
        "configuration": {NUCLEUS: {"interpolateComponentConfiguration": True}},
    }
    release = parse_release(release_doc(canary=canary), "releases/demo.json", demo)
    entry = release.ring("canary")
    assert entry is not None and dict(entry.components) == {**GOOD["components"], **pins}


def test_release_without_a_ring_is_valid(demo: PlantConfig) -> None:
    release = parse_release(release_doc(canary=GOOD), "releases/demo.json", demo)
    assert release.ring("fleet") is None


def test_write_release_round_trips_atomically(demo: PlantConfig, tmp_path: Path) -> None:
    path = release_path("demo", tmp_path)
    release = initial_release(demo, {INSPECTOR: "1.0.0", MODEL: "1.0.0"})
    write_release(path, release)
    updated = release.with_ring(
        "canary",
        {INSPECTOR: "1.1.0", MODEL: "2.0.0", LINE_BRIDGE: "1.0.0"},
        configuration={INSPECTOR: {"threads": 2}},
        updated_at="2026-11-28T05:00:00.000Z",
    )
    write_release(path, updated)
    loaded = load_release(path, demo)
    assert loaded == updated
    assert loaded.ring("fleet") == release.ring("fleet")
    assert json.loads(path.read_text())["rings"]["canary"]["configuration"] == {
        INSPECTOR: {"threads": 2}
    }
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]  # no temp file left


def test_with_ring_validates(demo: PlantConfig) -> None:
    release = Release(plant="demo")
    with pytest.raises(ValueError, match="missing required component"):
        release.with_ring("canary", {INSPECTOR: "1.0.0"})


def test_plants_whose_thing_names_could_collide_are_refused(tmp_path: Path) -> None:
    # thing lineguard-<plant>-<serial>: plant "demo" with serial "2-0001" would be a thing of
    # plant "demo-2"
    source = (PLANTS / "demo.yaml").read_text()
    (tmp_path / "demo.yaml").write_text(source)
    (tmp_path / "demo-2.yaml").write_text(source.replace("name: demo", "name: demo-2", 1))
    with pytest.raises(PlantConfigError, match=r"demo-2\.yaml: name: 'demo-2' starts with 'demo'"):
        load_plants(tmp_path)
    # in another account they cannot meet
    (tmp_path / "demo-2.yaml").write_text(
        source.replace("name: demo", "name: demo-2", 1).replace("123456789012", "210987654321")
    )
    assert sorted(p.name for p in load_plants(tmp_path)) == ["demo", "demo-2"]


def test_a_shadow_phase_needs_a_bake_to_hand_over_to() -> None:
    from stacks.config import Ring

    with pytest.raises(ValueError, match="shadow_minutes needs bake_minutes > 0"):
        Ring(name="canary", percent=10, shadow_minutes=30, bake_minutes=0)
    assert Ring(name="canary", percent=10, shadow_minutes=30, bake_minutes=60).shadow_minutes == 30
