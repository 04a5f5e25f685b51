"""Recipes: manifest selection, configuration merge/reset and recipe-variable interpolation.

Cases marked "KCRTest" follow the nucleus' own
``src/test/java/com/aws/greengrass/componentmanager/KernelConfigResolverTest.java`` (HEAD a28341c).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core_device.layout import Layout
from core_device.recipes import (
    ConfigurationUpdate,
    Interpolator,
    Recipe,
    RecipeError,
    RunningConfiguration,
    load_recipe,
    parse_recipe,
    render_value,
    resolve_configuration,
    resolve_services,
    should_interpolate_configuration,
)

ROOT = Path("/greengrass/v2")
LINUX = {"os": "linux", "architecture": "amd64"}
THING = "line1-station1-cam"


def recipe(
    name: str,
    version: str = "1.0.0",
    *,
    lifecycle: dict[str, Any] | None = None,
    default: dict[str, Any] | None = None,
    dependencies: dict[str, str] | None = None,
) -> Recipe:
    doc: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": lifecycle or {}}],
    }
    if default is not None:
        doc["ComponentConfiguration"] = {"DefaultConfiguration": default}
    if dependencies:
        doc["ComponentDependencies"] = {
            dep: {"VersionRequirement": req} for dep, req in dependencies.items()
        }
    return parse_recipe(doc, where=f"{name}.yaml", device=LINUX)


def interpolator() -> Interpolator:
    return Interpolator(paths=Layout(ROOT), thing_name=THING)


def resolve(
    recipes: list[Recipe],
    configs: dict[str, dict[str, Any]] | None = None,
    *,
    flag: bool = False,
) -> dict[str, Any]:
    configs = configs or {}
    full = {
        r.name: configs.get(
            r.name,
            resolve_configuration(r.default_configuration, None, None, timestamp=10).to_dict(),
        )
        for r in recipes
    }
    return resolve_services(
        recipes, full, interpolator=interpolator(), interpolate_configuration=flag
    )


# ------------------------------------------------------------------ interpolation (KCRTest)


def test_empty_json_pointer_renders_the_whole_configuration_as_json() -> None:
    # KCRTest GIVEN_component_with_config_WHEN_interpolate_empty_jsonpointer_THEN_interpolates_from_full_config
    a = recipe(
        "PackageA",
        lifecycle={"install": {"script": "echo param {configuration:}, root {kernel:rootPath}"}},
        default={"startup": {"paramA": "valueA"}},
    )
    script = resolve([a])["PackageA"].lifecycle["install"]["script"]
    assert script == f'echo param {{"startup":{{"paramA":"valueA"}}}}, root {ROOT}'


def test_inner_level_of_a_nested_namespace_is_resolved() -> None:
    # KCRTest ..._THEN_inner_level_is_resolved_for_nested_namespace (interpolation of config on)
    a = recipe(
        "PackageA", "1.2.0", lifecycle={"run": "java -jar {configuration:/jarPath}/test.jar -x arg"}
    )
    config = {"jarPath": "{artifacts:{randomNameSpace:{artifacts:path}}}"}
    run = resolve([a], {"PackageA": config}, flag=True)["PackageA"].lifecycle["run"]
    artifacts = ROOT / "packages/artifacts/PackageA/1.2.0"
    assert run == f"java -jar {{artifacts:{{randomNameSpace:{artifacts}}}}}/test.jar -x arg"


def test_nested_cross_component_work_paths_resolve_at_the_inner_level() -> None:
    # KCRTest ..._in_nested_namespace_cross_component_configuration_interpolated_for_inner_level
    a = recipe(
        "PackageA",
        "1.2.0",
        lifecycle={"run": "java -jar {configuration:/jarPath}/test.jar"},
        dependencies={"PackageB": "2.3", "PackageC": "3.4"},
    )
    b, c = recipe("PackageB", "2.3.0"), recipe("PackageC", "3.4.0")
    config = {"jarPath": "{randomName:{{{PackageB:work:path}:{PackageC:work:path}}:randomVal}}"}
    run = resolve([a, b, c], {"PackageA": config})["PackageA"].lifecycle["run"]
    assert run == (
        f"java -jar {{randomName:{{{{{ROOT}/work/PackageB:{ROOT}/work/PackageC}}:randomVal}}}}/test.jar"
    )


def test_configuration_gets_system_parameters_only_and_only_of_dependencies() -> None:
    # KCRTest ..._THEN_only_system_parameters_got_interpolated_not_configuration
    a = recipe(
        "PackageA",
        default={
            "paramA": "valueA",
            "shouldNotInterpolateLocalConfig": "{configuration:/paramA}",
            "shouldInterpolateLocalSystemParameter": "{iot:thingName}",
            "shouldNotInterpolateDependencyConfig": "{PackageB:configuration:/paramB}",
            "shouldInterpolateDependencySystemParameter": "{PackageB:work:path}",
            "shouldNotInterpolateNoneDependencySystemParameter": "{PackageC:work:path}",
        },
        dependencies={"PackageB": "1.0.0"},
    )
    b = recipe("PackageB", default={"paramB": "valueB"})
    c = recipe("PackageC")
    update = ConfigurationUpdate(
        merge={"shouldInterpolateDeploymentSystemParameter": "{kernel:rootPath}"}
    )
    configs = {
        "PackageA": resolve_configuration(
            a.default_configuration, None, update, timestamp=10
        ).to_dict()
    }
    conf = resolve([a, b, c], configs, flag=True)["PackageA"].configuration
    assert conf["shouldNotInterpolateLocalConfig"] == "{configuration:/paramA}"
    assert conf["shouldInterpolateLocalSystemParameter"] == THING
    assert conf["shouldNotInterpolateDependencyConfig"] == "{PackageB:configuration:/paramB}"
    assert conf["shouldInterpolateDependencySystemParameter"] == f"{ROOT}/work/PackageB"
    assert conf["shouldNotInterpolateNoneDependencySystemParameter"] == "{PackageC:work:path}"
    assert conf["shouldInterpolateDeploymentSystemParameter"] == str(ROOT)


def test_configuration_is_left_alone_when_interpolation_is_off() -> None:
    # KCRTest ..._interpolate_config_not_set_..._THEN_artifact_path_should_not_be_interpolated...
    a = recipe("PackageA", default={"jarPath": "{artifacts:path}", "who": "{iot:thingName}"})
    conf = resolve([a], flag=False)["PackageA"].configuration
    assert conf == {"jarPath": "{artifacts:path}", "who": "{iot:thingName}"}


def test_system_parameters_in_a_list_inside_configuration() -> None:
    # KCRTest ..._THEN_artifact_path_should_be_interpolated_in_list
    a = recipe("PackageA", "1.2.0", default={"paths": ["/some/path", "{artifacts:path}"]})
    conf = resolve([a], flag=True)["PackageA"].configuration
    assert conf["paths"] == ["/some/path", str(ROOT / "packages/artifacts/PackageA/1.2.0")]


def test_lifecycle_variables_always_expand() -> None:
    a = recipe(
        "PackageA",
        "1.2.0",
        lifecycle={
            "install": {
                "script": "{artifacts:path} {artifacts:decompressedPath} {work:path}"
                " {kernel:rootPath} {iot:thingName}"
            }
        },
    )
    script = resolve([a])["PackageA"].lifecycle["install"]["script"]
    assert script == (
        f"{ROOT}/packages/artifacts/PackageA/1.2.0 {ROOT}/packages/artifacts-unarchived/PackageA/1.2.0"
        f" {ROOT}/work/PackageA {ROOT} {THING}"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        (3, "3"),
        (1.0, "1.0"),
        (0.5, "0.5"),
        (1e20, "1.0E20"),
        (1.5e-5, "1.5E-5"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ({"b": 1, "a": [1, "x"]}, '{"a":[1,"x"],"b":1}'),
        ([1, 2], "[1,2]"),
    ],
)
def test_configuration_nodes_render_as_the_nucleus_renders_them(value: Any, text: str) -> None:
    assert render_value(value) == text
    a = recipe("PackageA", lifecycle={"run": "x={configuration:/v}"}, default={"v": value})
    assert resolve([a])["PackageA"].lifecycle["run"] == f"x={text}"


def test_unknown_variables_and_missing_keys_are_left_as_they_are() -> None:
    a = recipe(
        "PackageA",
        lifecycle={
            "run": "{configuration:/missing} {configuration:/list/5} {foo:bar} {iot:unknown}"
            " {Other:work:path} {PackageA:work:path} {configuration:/a~1b} {configuration:/l/1}"
        },
        default={"list": [1], "a/b": "slash", "l": ["x", "y"]},
    )
    run = resolve([a])["PackageA"].lifecycle["run"]
    # a component is not its own dependency: {PackageA:work:path} stays (KCR:572-578)
    assert run == (
        "{configuration:/missing} {configuration:/list/5} {foo:bar} {iot:unknown}"
        " {Other:work:path} {PackageA:work:path} slash y"
    )


def test_dependency_configuration_in_lifecycle_only_for_declared_dependencies() -> None:
    # KCRTest ..._configuration_update_on_dependency_component_..._applied_to_dependent_component
    a = recipe(
        "PackageA",
        lifecycle={"run": "{PackageB:configuration:/paramB} {PackageC:configuration:/paramC}"},
        dependencies={"PackageB": "1.0.0"},
    )
    b = recipe("PackageB", default={"paramB": "valueB"})
    c = recipe("PackageC", default={"paramC": "valueC"})
    assert (
        resolve([a, b, c])["PackageA"].lifecycle["run"] == "valueB {PackageC:configuration:/paramC}"
    )


def test_a_json_pointer_without_slash_is_an_error_naming_the_component() -> None:
    a = recipe("PackageA", lifecycle={"run": "{configuration:paramA}"}, default={"paramA": 1})
    with pytest.raises(RecipeError, match=r"PackageA: \{configuration:paramA\}"):
        resolve([a])


# ------------------------------------------------------------------- configuration merge/reset


def test_reset_restores_the_default_and_drops_keys_without_one() -> None:
    # KCRTest GIVEN_deployment_with_configuration_reset_..._THEN_default_value_applied
    running = RunningConfiguration()
    running.merge(9_000, {"startup": {"paramA": "valueB", "paramB": "valueD"}})
    update = ConfigurationUpdate(reset=("/startup/paramA", "/startup/paramB"))
    result = resolve_configuration(
        {"startup": {"paramA": "valueA"}}, running, update, timestamp=10_000
    )
    assert result.to_dict() == {"startup": {"paramA": "valueA"}}


def test_a_later_deployment_without_an_update_keeps_the_merged_values() -> None:
    # KCRTest GIVEN_component_has_running_configuration_and_no_update_..._running_value_should_be_used
    first = resolve_configuration(
        {"a": 1, "b": 2},
        None,
        ConfigurationUpdate(merge={"a": 10, "extra": "x"}),
        timestamp=1_000,
    )
    # a new version changes both defaults: the merged value stays, the plain default moves on
    second = resolve_configuration({"a": 5, "b": 3}, first, None, timestamp=2_000)
    assert second.to_dict() == {"a": 10, "b": 3, "extra": "x"}


def test_reset_runs_before_merge_and_empty_pointer_resets_everything() -> None:
    running = resolve_configuration(
        {"a": 1}, None, ConfigurationUpdate(merge={"a": 2, "b": 3}), timestamp=5
    )
    update = ConfigurationUpdate(merge={"b": 4}, reset=("",))
    assert resolve_configuration({"a": 1}, running, update, timestamp=6).to_dict() == {
        "a": 1,
        "b": 4,
    }
    update = ConfigurationUpdate(merge={"a": 7}, reset=("/a",))
    assert resolve_configuration({"a": 1}, running, update, timestamp=6).to_dict() == {
        "a": 7,
        "b": 3,
    }


def test_merge_keys_match_case_insensitively_and_types_replace() -> None:
    config = resolve_configuration(
        {"Plant": "p", "runtime": {"deadline_ms": 500}},
        None,
        ConfigurationUpdate(merge={"plant": "north", "runtime": 3}),
        timestamp=5,
    )
    assert config.to_dict() == {"Plant": "north", "runtime": 3}


def test_reset_into_a_list_element_is_ignored() -> None:
    running = resolve_configuration({}, None, ConfigurationUpdate(merge={"l": [1, 2]}), timestamp=5)
    update = ConfigurationUpdate(reset=("/l/0",))
    assert resolve_configuration({}, running, update, timestamp=6).to_dict() == {"l": [1, 2]}


def test_configuration_update_parses_the_create_deployment_form() -> None:
    update = ConfigurationUpdate.parse({"merge": '{"fps": 2.5}', "reset": ["/cameras"]}, where="x")
    assert update == ConfigurationUpdate(merge={"fps": 2.5}, reset=("/cameras",))
    with pytest.raises(
        RecipeError, match=r"components.A.configurationUpdate.merge: not valid JSON"
    ):
        ConfigurationUpdate.parse({"merge": "{nope"}, where="components.A.configurationUpdate")
    with pytest.raises(RecipeError, match="not a JSON pointer"):
        ConfigurationUpdate.parse({"reset": ["cameras"]}, where="x")


def test_interpolate_component_configuration_comes_from_the_nucleus_configuration() -> None:
    assert should_interpolate_configuration(None) is False
    assert should_interpolate_configuration({"interpolateComponentConfiguration": True}) is True
    assert should_interpolate_configuration({"interpolateComponentConfiguration": "true"}) is True
    assert (
        should_interpolate_configuration({"interpolateComponentConfiguration": False}, True)
        is False
    )
    assert should_interpolate_configuration({"logging": {}}, current=True) is True


# ------------------------------------------------------------------------ manifest selection


def test_first_matching_manifest_wins_with_wildcards_and_regexes() -> None:
    doc = {
        "ComponentName": "A",
        "ComponentVersion": "1.0.0",
        "Manifests": [
            {"Platform": {"os": "windows"}, "Lifecycle": {"run": "win"}},
            {
                "Platform": {"os": "/linux|darwin/", "architecture": "aarch64"},
                "Lifecycle": {"run": "arm"},
            },
            {"Platform": {"os": "/linux|darwin/", "custom": "*"}, "Lifecycle": {"run": "linux"}},
            {"Lifecycle": {"run": "any"}},
        ],
    }
    assert parse_recipe(doc, where="a", device=LINUX).lifecycle == {"run": "linux"}
    arm = {"os": "linux", "architecture": "aarch64"}
    assert parse_recipe(doc, where="a", device=arm).lifecycle == {"run": "arm"}
    assert parse_recipe(doc, where="a", device={"os": "qnx"}).lifecycle == {"run": "any"}


def test_no_matching_manifest_is_an_error_naming_the_file() -> None:
    doc = {
        "ComponentName": "A",
        "ComponentVersion": "1",
        "Manifests": [{"Platform": {"os": "windows"}}],
    }
    with pytest.raises(RecipeError, match=r"^a\.yaml: no manifest matches"):
        parse_recipe(doc, where="a.yaml", device=LINUX)


def test_a_manifest_without_lifecycle_uses_the_global_one_by_selection() -> None:
    doc: dict[str, Any] = {
        "ComponentName": "A",
        "ComponentVersion": "1.0.0",
        "Lifecycle": {"run": {"key1": "one", "all": "fallback"}, "install": "i"},
        "Manifests": [
            {"Platform": {"os": "windows"}, "Selections": ["key1"]},
            {"Platform": {"os": "linux"}},
        ],
    }
    assert parse_recipe(doc, where="a", device=LINUX).lifecycle == {
        "run": "fallback",
        "install": "i",
    }
    doc["Manifests"][1]["Selections"] = ["key1"]
    assert parse_recipe(doc, where="a", device=LINUX).lifecycle == {"run": "one", "install": "i"}


def test_malformed_recipes_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ComponentName: [unclosed\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=rf"^{bad}: not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="missing.yaml: cannot read"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="ComponentVersion missing"):
        parse_recipe({"ComponentName": "A"}, where="a", device=LINUX)
    doc = {
        "ComponentName": "A",
        "ComponentVersion": "1",
        "Manifests": [{"Artifacts": [{"URI": "s3://b/a.zip", "Unarchive": "TAR"}]}],
    }
    with pytest.raises(RecipeError, match=r"Artifacts\[0\]\.Unarchive 'TAR'"):
        parse_recipe(doc, where="a", device=LINUX)


# ------------------------------------------------------------------ the repository's recipes


def _built(built_components: Path, name: str) -> Recipe:
    (directory,) = (built_components / name).iterdir()
    return load_recipe(directory / "recipe.yaml", device=LINUX)


def test_the_inspector_run_script_gets_the_model_decompressed_path(built_components: Path) -> None:
    inspector = _built(built_components, "com.lineguard.Inspector")
    model = _built(built_components, "com.lineguard.Model")
    assert inspector.dependencies["com.lineguard.Model"].dependency_type == "HARD"
    configs = {inspector.name: dict(inspector.default_configuration)}
    services = resolve([model, inspector], configs)
    run = services[inspector.name].lifecycle["startup"]["Script"]
    model_dir = ROOT / "packages/artifacts-unarchived/com.lineguard.Model" / model.version
    assert f"--model {model_dir}/model " in run
    assert f"--device {THING} " in run
    assert "--fps 1.0 " in run and "--journal-cap-mb 512 " in run
    assert (
        f"PYTHONPATH={ROOT}/packages/artifacts-unarchived/com.lineguard.Inspector/1.0.0/inspector"
        in run
    )
    assert "{" not in run
    install = services[inspector.name].lifecycle["install"]
    assert install["Timeout"] == 900
    assert f"install-device.sh {ROOT}/work/com.lineguard.Inspector " in install["Script"]


def test_inspector_access_control_keeps_thing_name_unless_interpolation_is_on(
    built_components: Path,
) -> None:
    inspector = _built(built_components, "com.lineguard.Inspector")
    model = _built(built_components, "com.lineguard.Model")
    configs = {inspector.name: dict(inspector.default_configuration)}

    def mqtt_resources(flag: bool) -> list[str]:
        conf = resolve([model, inspector], configs, flag=flag)[inspector.name].configuration
        policy = conf["accessControl"]["aws.greengrass.ipc.mqttproxy"]
        return policy["com.lineguard.Inspector:mqttproxy:1"]["resources"]

    assert mqtt_resources(False) == [
        "lineguard/+/+/+/{iot:thingName}/results",
        "lineguard/+/+/+/{iot:thingName}/health",
    ]
    assert mqtt_resources(True) == [
        f"lineguard/+/+/+/{THING}/results",
        f"lineguard/+/+/+/{THING}/health",
    ]


def test_the_model_recipe_has_an_empty_lifecycle_and_a_world_readable_zip(
    built_components: Path,
) -> None:
    model = _built(built_components, "com.lineguard.Model")
    assert model.lifecycle == {}
    (artifact,) = model.artifacts
    assert (artifact.file_name, artifact.unarchive, artifact.read) == ("model.zip", "ZIP", "ALL")
