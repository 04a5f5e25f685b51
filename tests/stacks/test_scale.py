"""Plant size: a 1,000-line plant synthesises into stacks CloudFormation takes, one synth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
import yaml

from stacks.app import StackLimitError, add_stacks, check_stack_sizes, resource_counts
from stacks.config import INSPECTOR, MODEL, PlantConfig, initial_release, line_stack, load_plant

from .conftest import PLANTS

LINES = 1000
PLANT_STACK = "LineGuard-Plant-big"
# CloudFormation quotas (cloudformation-limits.html)
MAX_RESOURCES = 500
MAX_RESOURCES_PER_OPERATION = 2500
MAX_TEMPLATE_BYTES = 1_000_000  # "1 MB" for a template in S3, where CDK puts every template
MAX_PARAMETERS = 200


@dataclass
class Synth:
    plant: PlantConfig
    outdir: Path
    counts: dict[str, int]

    def template(self, name: str) -> dict[str, Any]:
        return json.loads((self.outdir / name).read_text())

    @property
    def nested(self) -> dict[str, dict[str, Any]]:
        return {p.name: self.template(p.name) for p in self.outdir.glob("*.nested.template.json")}

    @property
    def plant_template(self) -> dict[str, Any]:
        return self.template(f"{PLANT_STACK}.template.json")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    plants = tmp_path_factory.mktemp("plants")
    doc = yaml.safe_load((PLANTS / "example-large.yaml").read_text())
    stations = doc["lines"][0]["stations"]
    doc.update(
        name="big",
        expected_devices=20_000,
        lines=[
            {"name": f"hall{i // 100}-line-{i:04d}", "stations": stations} for i in range(LINES)
        ],
    )
    (plants / "big.yaml").write_text(yaml.safe_dump(doc))
    plant = load_plant(plants / "big.yaml")  # the plant-file path app.py takes
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(
        outdir=str(outdir),
        builtin_cloud_formation_validation=False,  # the assertions below are the check here
        context={"aws:cdk:enable-asset-metadata": True},
    )
    release = initial_release(plant, {INSPECTOR: "1.0.0", MODEL: "1.0.0"})
    add_stacks(app, (plant,), {plant.name: release})
    counts = resource_counts(app)
    check_stack_sizes(app)
    app.synth()
    return Synth(plant, outdir, counts)


def resources_of(template: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [r for r in template["Resources"].values() if r["Type"] == type_]


def test_every_template_fits_cloudformation(big: Synth) -> None:
    templates = sorted(big.outdir.glob("*.template.json"))
    assert len(templates) == 1 + 1 + 5  # shared, plant, its line stacks
    for path in templates:
        template = json.loads(path.read_text())
        assert len(template["Resources"]) <= MAX_RESOURCES, path.name
        assert path.stat().st_size <= MAX_TEMPLATE_BYTES, path.name
        assert len(template.get("Parameters", {})) <= MAX_PARAMETERS, path.name


def test_the_plant_and_its_nested_stacks_create_in_one_operation(big: Synth) -> None:
    total = len(big.plant_template["Resources"]) + sum(
        len(t["Resources"]) for t in big.nested.values()
    )
    assert LINES < total <= MAX_RESOURCES_PER_OPERATION
    # resource_counts (what app.py checks before synthesis) saw the same stacks
    assert sum(n for path, n in big.counts.items() if path.startswith(PLANT_STACK)) == total


def test_every_line_has_one_top_level_group_in_the_stack_its_name_picks(big: Synth) -> None:
    seen: list[str] = []
    for template in big.nested.values():
        groups = resources_of(template, "AWS::IoT::ThingGroup")
        assert len(groups) == len(template["Resources"])  # line groups only
        stacks = {
            line_stack(g["Properties"]["ThingGroupName"].split("-line-", 1)[1]) for g in groups
        }
        assert len(stacks) == 1
        assert all("ParentGroupName" not in g["Properties"] for g in groups)
        seen += [g["Properties"]["ThingGroupName"] for g in groups]
    assert sorted(seen) == sorted(big.plant.line_group_name(line.name) for line in big.plant.lines)


def test_plant_stack_itself_does_not_grow_with_lines(big: Synth) -> None:
    template = big.plant_template
    groups = resources_of(template, "AWS::IoT::ThingGroup")
    assert len(groups) == 1 + len(big.plant.rings)  # the plant group and its rings
    # five plant alarms, one deployment-not-serving alarm per ring, one for the check's own errors
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 5 + len(big.plant.rings) + 1
    assert len(template["Resources"]) < 100


def test_provisioning_template_waits_for_every_line_stack(big: Synth) -> None:
    template = big.plant_template["Resources"]
    nested = {k for k, r in template.items() if r["Type"] == "AWS::CloudFormation::Stack"}
    (provisioning,) = resources_of(big.plant_template, "AWS::IoT::ProvisioningTemplate")
    assert len(nested) == 5 and nested <= set(provisioning["DependsOn"])


def test_dashboard_stays_within_its_quotas(big: Synth) -> None:
    (dashboard,) = resources_of(big.plant_template, "AWS::CloudWatch::Dashboard")
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body = json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))
    # CloudWatch quotas (cloudwatch_limits.html): 500 widgets, 500 metrics per widget, 2,500
    # metrics per dashboard. A query is one entry; it returns at most LINES_SHOWN series.
    entries = [len(w["properties"].get("metrics", [])) for w in body["widgets"]]
    assert len(body["widgets"]) < 10 and max(entries) <= 3 and sum(entries) < 20


def test_every_function_environment_stays_small_and_the_hook_bundles_every_line(
    big: Synth,
) -> None:
    functions = resources_of(big.plant_template, "AWS::Lambda::Function")
    for fn in functions:
        env = fn["Properties"].get("Environment", {}).get("Variables", {})
        assert sum(len(k) + len(v) for k, v in env.items()) < 4096  # Lambda: 4 KB in all
    (hook,) = [f for f in functions if f["Properties"]["Handler"] == "hook.handler"]
    bundled = big.outdir / hook["Metadata"]["aws:asset:path"] / "plant.json"
    assert list(json.loads(bundled.read_text())["lines"]) == [line.name for line in big.plant.lines]


def test_results_table_projects_every_line_within_glue_limits(big: Synth) -> None:
    (table,) = [
        t
        for t in resources_of(big.plant_template, "AWS::Glue::Table")
        if t["Properties"]["TableInput"]["Name"] == "results"
    ]
    values = table["Properties"]["TableInput"]["Parameters"]["projection.line.values"]
    assert len(values.split(",")) == LINES
    # Glue TableInput.Parameters values: at most 512,000 characters (botocore glue
    # 2017-03-31 service model, ParametersMapValue)
    assert len(values) < 512_000


def test_oversized_stacks_are_refused_before_synthesis() -> None:
    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Big")
    for i in range(MAX_RESOURCES):
        cdk.CfnResource(stack, f"R{i}", type="AWS::SNS::Topic")
    check_stack_sizes(app)  # 500 is allowed
    cdk.CfnResource(stack, "OneTooMany", type="AWS::SNS::Topic")
    with pytest.raises(StackLimitError, match=r"^Big: 501 resources, CloudFormation takes"):
        check_stack_sizes(app)


def test_a_stack_whose_nested_stacks_exceed_one_operation_is_refused() -> None:
    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Parent")
    for n in range(6):  # 6 nested stacks (+6 stack resources) of 416 resources: 2,502
        nested = cdk.NestedStack(stack, f"N{n}")
        for i in range(416):
            cdk.CfnResource(nested, f"R{i}", type="AWS::SNS::Topic")
    with pytest.raises(StackLimitError, match=r"^Parent: 2502 resources with its nested stacks"):
        check_stack_sizes(app)
