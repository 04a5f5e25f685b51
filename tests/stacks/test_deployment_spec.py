"""deployment_spec: the exact Greengrass v2 CreateDeployment request, and its CloudFormation twin."""

from __future__ import annotations

import itertools
import json
from typing import Any

import boto3
import jsonschema
import pytest
from botocore.stub import Stubber
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from stacks.config import (
    INSPECTOR,
    LINE_BRIDGE,
    MODEL,
    NUCLEUS,
    SHADOW_MANAGER,
    PlantConfig,
    Release,
)
from stacks.deployment_spec import (
    NoRingRelease,
    deployment_spec,
    release_configuration,
    to_cfn_properties,
)


@pytest.fixture(scope="module")
def greengrass() -> Any:
    return boto3.client(
        "greengrassv2",
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def send(client: Any, spec: dict[str, Any]) -> None:
    """Send the spec through a Stubber, which validates it against the real service model."""
    with Stubber(client) as stub:
        stub.add_response(
            "create_deployment",
            {"deploymentId": "d-1", "iotJobId": "j-1"},
            expected_params=spec,
        )
        assert client.create_deployment(**spec)["deploymentId"] == "d-1"
        stub.assert_no_pending_responses()


def test_spec_is_a_valid_create_deployment_request(
    greengrass: Any, large: PlantConfig, large_release: Release
) -> None:
    for ring in large.ring_names:
        send(greengrass, deployment_spec(large, ring, large_release))


def test_standing_spec_is_the_rollout_spec_without_abort_criteria(
    greengrass: Any, large: PlantConfig, large_release: Release
) -> None:
    for ring in large.ring_names:
        standing = deployment_spec(large, ring, large_release, abort=False)
        send(greengrass, standing)
        rollout = deployment_spec(large, ring, large_release)
        assert "abortConfig" not in standing["iotJobConfiguration"]
        assert rollout["iotJobConfiguration"]["abortConfig"]["criteriaList"]
        del rollout["iotJobConfiguration"]["abortConfig"]
        assert standing == rollout


def test_spec_with_configuration_merge_is_valid(greengrass: Any, demo: PlantConfig) -> None:
    release = Release(plant="demo").with_ring(
        "canary",
        {INSPECTOR: "1.2.0", MODEL: "2.0.0", LINE_BRIDGE: "0.3.1"},
        configuration={INSPECTOR: {"threads": 2, "shadow": None}},
    )
    spec = deployment_spec(demo, "canary", release)
    send(greengrass, spec)
    merge = spec["components"][INSPECTOR]["configurationUpdate"]["merge"]
    assert json.loads(merge) == {"threads": 2, "shadow": None, "ring": "canary"}
    assert "configurationUpdate" not in spec["components"][MODEL]


def test_a_reset_comes_before_the_merge_for_the_named_components_only(
    greengrass: Any, demo: PlantConfig
) -> None:
    release = Release(plant="demo").with_ring(
        "canary",
        {INSPECTOR: "1.2.0", MODEL: "2.0.0", LINE_BRIDGE: "0.3.1"},
        configuration={MODEL: {"variant": "a"}},
    )
    spec = deployment_spec(demo, "canary", release, reset={MODEL, LINE_BRIDGE})
    send(greengrass, spec)  # the service model takes reset + merge together
    assert spec["components"][MODEL]["configurationUpdate"] == {
        "reset": [""],
        "merge": '{"variant":"a"}',
    }
    assert spec["components"][LINE_BRIDGE]["configurationUpdate"] == {"reset": [""]}
    assert spec["components"][INSPECTOR]["configurationUpdate"] == {"merge": '{"ring":"canary"}'}
    assert deployment_spec(demo, "canary", release) != spec  # no reset unless asked
    # a reset inspector gets its ring back from the merge, which runs after the reset
    inspector = deployment_spec(demo, "canary", release, reset={INSPECTOR})["components"][INSPECTOR]
    assert inspector["configurationUpdate"] == {"reset": [""], "merge": '{"ring":"canary"}'}


def test_spec_pins_exact_versions_and_targets_the_ring_group(
    demo: PlantConfig, demo_release: Release
) -> None:
    spec = deployment_spec(demo, "fleet", demo_release)
    assert spec["targetArn"] == (
        "arn:aws:iot:eu-west-1:123456789012:thinggroup/lineguard-demo-ring-fleet"
    )
    assert spec["deploymentName"] == "lineguard-demo-fleet"
    assert {k: v["componentVersion"] for k, v in spec["components"].items()} == {
        NUCLEUS: "2.16.1",
        SHADOW_MANAGER: "2.3.12",
        INSPECTOR: "1.0.0",
        LINE_BRIDGE: "1.0.0",
        MODEL: "1.0.0",
    }


def test_shipped_rings_turn_on_interpolation_and_leave_device_settings_alone(
    greengrass: Any, demo: PlantConfig, demo_release: Release
) -> None:
    for ring in demo.ring_names:
        spec = deployment_spec(demo, ring, demo_release)
        send(greengrass, spec)
        nucleus = spec["components"][NUCLEUS]
        assert json.loads(nucleus["configurationUpdate"]["merge"]) == {
            "interpolateComponentConfiguration": True
        }
        # the PLC endpoint and stations reach a device from its provisioning, not its ring
        assert "configurationUpdate" not in spec["components"][LINE_BRIDGE]
        # the inspector is told its ring, and nothing else
        assert spec["components"][INSPECTOR]["configurationUpdate"] == {
            "merge": json.dumps({"ring": ring}, separators=(",", ":"))
        }


def test_spec_policies_come_from_the_plant_file(large: PlantConfig, large_release: Release) -> None:
    spec = deployment_spec(large, "early", large_release)
    policies = spec["deploymentPolicies"]
    assert policies["failureHandlingPolicy"] == "ROLLBACK"
    assert policies["componentUpdatePolicy"] == {
        "timeoutInSeconds": 300,
        "action": "NOTIFY_COMPONENTS",
    }
    job = spec["iotJobConfiguration"]
    assert job["jobExecutionsRolloutConfig"] == {
        "exponentialRate": {
            "baseRatePerMinute": 20,
            "incrementFactor": 2.0,
            "rateIncreaseCriteria": {"numberOfSucceededThings": 50},
        },
        "maximumPerMinute": 500,
    }
    assert job["abortConfig"]["criteriaList"][0] == {
        "failureType": "FAILED",
        "action": "CANCEL",
        "thresholdPercentage": 5.0,
        "minNumberOfExecutedThings": 20,
    }
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 120}


def test_ring_without_release_has_no_spec(demo: PlantConfig) -> None:
    release = Release(plant="demo").with_ring("canary", {INSPECTOR: "1.0.0", MODEL: "1.0.0"})
    with pytest.raises(NoRingRelease, match="ring 'fleet' has no release"):
        deployment_spec(demo, "fleet", release)


def test_unknown_ring_names_the_plant_rings(demo: PlantConfig, demo_release: Release) -> None:
    with pytest.raises(KeyError, match="rings: canary, fleet"):
        deployment_spec(demo, "broad", demo_release)


def test_cfn_properties_match_the_cloudformation_schema(
    large: PlantConfig, large_release: Release
) -> None:
    schema = dict(
        PROVIDER_SCHEMA_MANAGER.get_resource_schema(
            "eu-west-1", "AWS::GreengrassV2::Deployment"
        ).schema
    )
    schema.pop("readOnlyProperties", None)
    for ring, abort in itertools.product(large.ring_names, (True, False)):
        props = to_cfn_properties(deployment_spec(large, ring, large_release, abort=abort))
        jsonschema.validate(props, schema)
        assert ("AbortConfig" in props["IotJobConfiguration"]) is abort
        assert props["DeploymentPolicies"]["FailureHandlingPolicy"] == "ROLLBACK"
        # names kept, not PascalCased
        assert set(props["Components"]) == {NUCLEUS, SHADOW_MANAGER, INSPECTOR, LINE_BRIDGE, MODEL}
        assert props["Tags"] == {"lineguard:plant": "example-large", "lineguard:ring": ring}


def test_cfn_properties_carry_the_same_values(demo: PlantConfig) -> None:
    release = Release(plant="demo").with_ring(
        "canary", {INSPECTOR: "1.0.0", MODEL: "1.0.0"}, configuration={INSPECTOR: {"a": 1}}
    )
    spec = deployment_spec(demo, "canary", release)
    props = to_cfn_properties({**spec, "clientToken": "abc"})
    assert "ClientToken" not in props
    assert props["Components"][INSPECTOR]["ConfigurationUpdate"] == {
        "Merge": '{"a":1,"ring":"canary"}'
    }
    criteria = props["IotJobConfiguration"]["AbortConfig"]["CriteriaList"]
    assert [c["FailureType"] for c in criteria] == ["FAILED", "TIMED_OUT"]
    assert props["TargetArn"] == spec["targetArn"]


def test_the_ring_wins_over_a_release_value_and_is_left_out_when_read_back(
    demo: PlantConfig,
) -> None:
    release = Release(plant="demo").with_ring(
        "canary",
        {INSPECTOR: "1.0.0", MODEL: "1.0.0"},
        configuration={INSPECTOR: {"ring": "fleet", "threads": 2}, MODEL: {"variant": "a"}},
    )
    spec = deployment_spec(demo, "canary", release)
    merges = {
        name: json.loads(c["configurationUpdate"]["merge"])
        for name, c in spec["components"].items()
        if "merge" in c.get("configurationUpdate", {})
    }
    assert merges == {INSPECTOR: {"ring": "canary", "threads": 2}, MODEL: {"variant": "a"}}
    assert release_configuration(merges) == {INSPECTOR: {"threads": 2}, MODEL: {"variant": "a"}}
    # a release without inspector configuration reads back without one
    assert release_configuration({INSPECTOR: {"ring": "canary"}}) == {}


def test_the_inspector_accepts_every_ring_name_the_plant_file_accepts() -> None:
    from inspector.component_config import RING_NAME as DEVICE_RING_NAME
    from stacks.config import RING_NAME

    assert DEVICE_RING_NAME.pattern == RING_NAME
