"""The com.lineguard.LineBridge recipe: valid against the GDK schema, local topics only, and its
DefaultConfiguration is a configuration the bridge accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from line_bridge import COMPONENT_NAME
from line_bridge.config import parse_component_config

# The inspector's packaging test owns the schema location, the GDK key lowering and the build module;
# reuse them so the bridge recipe is checked exactly like the inspector's
from tests.inspector.test_recipes import (  # noqa: E402
    SCHEMA,
    component_build,
    lower_keys,
    make_wheel,
)

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "edge_component" / "recipes" / "com.lineguard.LineBridge.yaml"


def _recipe() -> dict[str, Any]:
    text = component_build.render_recipe(
        RECIPE.read_text(encoding="utf-8"), name=COMPONENT_NAME, version="1.0.0", bucket="bucket"
    )
    doc: dict[str, Any] = component_build.check_recipe(
        text, where=str(RECIPE), name=COMPONENT_NAME, version="1.0.0"
    )
    return doc


def _schema() -> dict[str, Any]:
    if not SCHEMA.is_file():
        pytest.fail(f"GDK recipe schema not found at {SCHEMA} (shared/ beside the clone)")
    schema: dict[str, Any] = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return schema


def test_recipe_is_valid_against_the_gdk_schema() -> None:
    recipe = _recipe()
    jsonschema.Draft7Validator(_schema()).validate(lower_keys(recipe))
    assert recipe["ComponentName"] == COMPONENT_NAME
    uri = recipe["Manifests"][0]["Artifacts"][0]["URI"]
    assert uri == f"s3://bucket/{COMPONENT_NAME}/1.0.0/line_bridge.zip"


def test_schema_catches_a_broken_recipe() -> None:
    broken = lower_keys(_recipe())
    broken["manifests"][0]["artifacts"][0]["unarchive"] = "TAR"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(_schema()).validate(broken)


def test_default_configuration_is_a_valid_bridge_configuration() -> None:
    configs = parse_component_config(
        _recipe()["ComponentConfiguration"]["DefaultConfiguration"], "recipe DefaultConfiguration"
    )
    assert configs.by_identity  # the station comes from the device's identity, not the ring
    config = configs.for_station("station-1")
    assert config.transport.kind == "greengrass"
    assert config.verdicts == "negative"
    assert config.controller.protocol == "opcua"
    assert config.heartbeat_window_s > 0


def test_access_control_allows_only_the_local_topics_and_the_identity_shadow() -> None:
    policies = _recipe()["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    # no IoT Core access at all
    assert set(policies) == {"aws.greengrass.ipc.pubsub", "aws.greengrass.ShadowManager"}
    granted: dict[str, set[str]] = {}
    for policy in policies["aws.greengrass.ipc.pubsub"].values():
        for op in policy["operations"]:
            granted.setdefault(op, set()).update(policy["resources"])
    shadow = "$aws/things/{iot:thingName}/shadow/name/lineguard-identity"
    assert granted == {
        "aws.greengrass#SubscribeToTopic": {
            "lineguard/local/*/reject",
            "lineguard/local/*/verdict",
            "lineguard/local/*/heartbeat",
            f"{shadow}/update/accepted",
            f"{shadow}/delete/accepted",
        },
        "aws.greengrass#PublishToTopic": {"lineguard/local/line-bridge/health"},
    }
    # local pub/sub authorization matches `+` and `#` literally (nucleus WildcardTrie.java)
    assert not any("+" in r or "#" in r for rs in granted.values() for r in rs)
    shadows = list(policies["aws.greengrass.ShadowManager"].values())
    assert [(p["operations"], p["resources"]) for p in shadows] == [
        (["aws.greengrass#GetThingShadow"], [shadow])
    ]


def test_the_bridge_depends_on_shadow_manager() -> None:
    deps = _recipe()["ComponentDependencies"]
    assert deps["aws.greengrass.ShadowManager"]["VersionRequirement"].startswith(">=2.2.0")


def _pubsub_matches(resource: str, topic: str) -> bool:
    """The nucleus' rule for aws.greengrass.ipc.pubsub: `*` matches any characters, nothing
    else is special (authorization/WildcardTrie.java, matchesStandard)."""
    import fnmatch

    return fnmatch.fnmatchcase(topic, resource.replace("[", "[[]").replace("?", "[?]"))


def test_the_topics_the_bridge_subscribes_to_are_granted() -> None:
    from line_bridge.subscribers import topics_for

    policies = _recipe()["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    resources = [
        r
        for p in policies["aws.greengrass.ipc.pubsub"].values()
        if "aws.greengrass#SubscribeToTopic" in p["operations"]
        for r in p["resources"]
    ]
    for topic in topics_for(["press-out"]):
        assert any(_pubsub_matches(r, topic) for r in resources), topic


def test_run_command_uses_the_greengrass_entry_point() -> None:
    run = _recipe()["Manifests"][0]["Lifecycle"]["run"]["Script"]
    assert "-m line_bridge run --greengrass" in run
    from line_bridge.__main__ import _parser

    args = _parser().parse_args(["run", "--greengrass"])
    assert args.greengrass is True


def test_component_builds_with_the_shared_packaging(tmp_path: Path) -> None:
    """edge_component/build.py packs the bridge like the inspector: package + device wheels,
    at the paths the recipe's install and run scripts use; nothing outside the package."""
    import ast
    import zipfile

    requirements = tmp_path / "requirements-device.txt"
    requirements.write_text("lineguard-probe==0.1.0\n")
    cache = component_build.cache_dir_for(requirements, tmp_path / "cache")
    cache.mkdir(parents=True)
    make_wheel(cache)
    (cache / ".complete").write_text("lineguard-probe==0.1.0\n")
    spec = component_build.ComponentSpec(
        name=COMPONENT_NAME,
        version="1.2.3",
        recipe=RECIPE,
        package=ROOT / "edge_component" / "line_bridge",
        artifact="line_bridge",
        wheels=True,
        bucket="test-bucket",
    )
    built = component_build.build_component(
        spec,
        tmp_path / "components",
        requirements=requirements,
        wheel_cache=tmp_path / "cache",
        offline=True,
        log=lambda _: None,
    )
    assert built.uri == f"s3://test-bucket/{COMPONENT_NAME}/1.2.3/line_bridge.zip"
    with zipfile.ZipFile(built.artifact) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "line_bridge")  # = {artifacts:decompressedPath}/line_bridge
    assert "line_bridge/bridge.py" in names and "line_bridge/plc_sim.py" in names
    assert "wheels/lineguard_probe-0.1.0-py3-none-any.whl" in names
    assert "requirements-device.txt" in names
    # the shipped package imports only itself, the standard library and device requirements
    outside = {"stacks", "training", "rollout", "tests", "demo", "app", "bench", "inspector"}
    for path in (tmp_path / "line_bridge" / "line_bridge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            for mod in mods:
                assert mod.split(".")[0] not in outside, f"{path.name} imports {mod}"
