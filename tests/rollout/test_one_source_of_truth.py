"""The deployment in the synthesised Plant template equals the request the controller sent
(less its abort criteria: the standing deployment has none), and the health metrics the
controller reads are the ones the Plant stack publishes.

The template side is converted back to a ``create_deployment`` request with a conversion written
here (not the stack's own), so a drift in either direction fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rollout.aws import READS
from rollout.controller import Controller
from rollout.simulator import simulated_fleet
from stacks.config import PlantConfig, Release, load_plant_release
from stacks.rollout_metrics import rollout_namespace

DEPLOYMENT = "AWS::GreengrassV2::Deployment"
USER_KEYED = {"Components", "Tags"}


class Killed(BaseException):
    """Stops the controller like a kill would."""


def to_request(value: Any, user_keyed: bool = False) -> Any:
    """CloudFormation PascalCase properties → the boto3 camelCase request."""
    if isinstance(value, dict):
        return {
            (k if user_keyed else k[0].lower() + k[1:]): to_request(
                v, (not user_keyed) and k in USER_KEYED
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [to_request(v) for v in value]
    return value


def template_requests(
    plant: PlantConfig, release: Release, metrics: dict[str, set[str]] | None = None
) -> dict[str, dict[str, Any]]:
    """Synthesise the Plant stack for ``release``; return targetArn → request.

    ``metrics`` (if given) is filled with CloudWatch namespace → (metric name, dimension names)
    of the IoT rules' EMF documents (read back from their SQL here).
    """
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from stacks.app import add_stacks

    app = cdk.App()
    stacks = add_stacks(app, (plant,), {plant.name: release})
    template = Template.from_stack(stacks.plants[plant.name])
    resources = template.find_resources(DEPLOYMENT)
    if metrics is not None:
        for rule in template.find_resources("AWS::IoT::TopicRule").values():
            for directive in emf_directives(rule["Properties"]["TopicRulePayload"]["Sql"]):
                published = metrics.setdefault(directive["Namespace"], set())
                for dims in directive["Dimensions"]:
                    published.update((m["Name"], tuple(dims)) for m in directive["Metrics"])
    requests = [to_request(r["Properties"]) for r in resources.values()]
    return {r["targetArn"]: r for r in requests}


def emf_directives(sql: str) -> list[dict[str, Any]]:
    """The ``CloudWatchMetrics`` of a rule's ``SELECT VALUE`` EMF literal (none if it has none).

    The directives are plain literals (only members elsewhere hold IoT SQL expressions), so
    the bracketed list after ``'CloudWatchMetrics':`` reads as JSON once quoted so."""
    key = "'CloudWatchMetrics': "
    at = sql.find(key)
    if at < 0:
        return []
    start = end = at + len(key)
    depth = 0
    while True:
        depth += {"[": 1, "]": -1}.get(sql[end], 0)
        end += 1
        if depth == 0:
            return list(json.loads(sql[start:end].replace("'", '"')))


def sent_requests(sim: Any) -> list[dict[str, Any]]:
    # the clientToken makes a retried request idempotent; CloudFormation has no such field
    return [
        {k: v for k, v in req.items() if k != "clientToken"}
        for name, req in sim.calls
        if name == "create_deployment"
    ]


def standing(request: dict[str, Any]) -> dict[str, Any]:
    """A rollout request as the Plant stack's standing deployment has it: no abort criteria."""
    job = dict(request["iotJobConfiguration"])
    assert job.pop("abortConfig")["criteriaList"]  # the controller's deployments keep them
    return {**request, "iotJobConfiguration": job}


@pytest.mark.slow
def test_template_deployments_equal_the_controller_requests(
    demo_plant: PlantConfig, releases_dir: Path, tmp_path: Path, make_package
) -> None:
    package = make_package("1.1.0")
    release = load_plant_release(demo_plant, releases_dir)
    sim = simulated_fleet(demo_plant, release, new_version="1.1.0", devices=4, seed=1)
    real = sim.create_deployment

    def deploy(request: dict[str, Any]) -> str:
        if request["targetArn"] == demo_plant.ring_group_arn("fleet"):
            raise Killed  # stop after the canary: a mixed release (canary new, fleet old)
        return real(request)

    sim.create_deployment = deploy  # type: ignore[method-assign]
    ctl = Controller(
        plant=demo_plant,
        fleet=sim,
        clock=sim.clock,
        releases_dir=releases_dir,
        state_dir=tmp_path / "state",
        log=lambda _m: None,
    )
    with pytest.raises(Killed):
        ctl.promote(package)
    mixed = load_plant_release(demo_plant, releases_dir)
    metrics: dict[str, set[str]] = {}
    synthesised = template_requests(demo_plant, mixed, metrics)
    # the canary ran the candidate as a shadow first (the carrier 1.0.1), then the candidate
    carrier, canary = sent_requests(sim)
    assert carrier["components"]["com.lineguard.Model"] == {"componentVersion": "1.0.1"}
    assert canary["components"]["com.lineguard.Model"] == {"componentVersion": "1.1.0"}
    assert synthesised[canary["targetArn"]] == standing(canary)
    fleet = synthesised[demo_plant.ring_group_arn("fleet")]
    assert fleet["components"]["com.lineguard.Model"] == {"componentVersion": "1.0.0"}

    # the health metrics the controller reads against AWS are the ones the Plant stack publishes
    assert set(READS) <= metrics[rollout_namespace("demo")]

    sim.create_deployment = real  # type: ignore[method-assign]
    assert ctl.promote(package).status == "completed"
    final = template_requests(demo_plant, load_plant_release(demo_plant, releases_dir))
    latest = {r["targetArn"]: r for r in sent_requests(sim)}  # one deployment per target
    assert len(sent_requests(sim)) == 3 and len(latest) == 2
    for request in latest.values():
        assert final[request["targetArn"]] == standing(request)


@pytest.mark.slow
def test_a_synth_from_the_durable_release_after_a_promotion_changes_no_ring(
    demo_plant: PlantConfig, releases_dir: Path, tmp_path: Path, make_package,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The controller writes each rewritten release to S3 (``--releases-bucket``); ``cdk deploy
    -c releases_dir=s3://<bucket>/rollout/releases/`` synthesises from those objects, so after a
    promotion the template's deployments are exactly what each ring runs."""
    import aws_cdk as cdk
    import boto3
    from moto import mock_aws

    from stacks.app import load_selection
    from stacks.release_store import RELEASES_PREFIX, upload_release

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name=demo_plant.region)
        bucket = demo_plant.artifact_bucket_name  # where the controller keeps the releases
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": demo_plant.region}
        )
        release = load_plant_release(demo_plant, releases_dir)
        sim = simulated_fleet(demo_plant, release, new_version="1.1.0", devices=4, seed=1)
        ctl = Controller(plant=demo_plant, fleet=sim, clock=sim.clock, releases_dir=releases_dir,
                         state_dir=tmp_path / "state", log=lambda _m: None,
                         release_sink=lambda path: upload_release(s3, bucket, path))  # fmt: skip
        assert ctl.promote(make_package("1.1.0")).status == "completed"
        app = cdk.App(context={"releases_dir": f"s3://{bucket}/{RELEASES_PREFIX}", "plant": "demo"})
        selection = load_selection(app, Path(__file__).resolve().parents[2])
    durable = selection.releases["demo"]
    assert {r: e.components["com.lineguard.Model"] for r, e in durable.rings.items()} == {
        "canary": "1.1.0",
        "fleet": "1.1.0",
    }
    synthesised = template_requests(demo_plant, durable)
    for target, running in ((t, sim.ring_deployment(t)) for t in synthesised):
        assert running is not None
        deployed = {
            name: spec["componentVersion"]
            for name, spec in synthesised[target]["components"].items()
        }
        # each ring's synthesised deployment is what it runs (CloudFormation still makes a new
        # revision of a ring whose template changed since the last deploy: docs/deploy.md)
        assert deployed == running.components
    for request in {r["targetArn"]: r for r in sent_requests(sim)}.values():  # the latest each
        assert synthesised[request["targetArn"]] == standing(request)
