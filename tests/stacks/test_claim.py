"""stacks.claim against IoT in moto: claim certificate, policy attached, installer config."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from stacks import claim
from stacks.config import PlantConfig
from stacks.policies import claim_policy_document

from .conftest import PLANTS, RELEASES


@pytest.fixture
def iot(monkeypatch: pytest.MonkeyPatch, demo: PlantConfig) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # AWS IoT's certificate id is the SHA-256 of the DER certificate; moto models that only with
    # use_valid_cert (its default hashes the PEM text: moto iot/models.py compute_cert_id)
    with mock_aws(config={"iot": {"use_valid_cert": True}}):
        client = boto3.client("iot", region_name=demo.region)
        # what cdk deploy of the plant stack leaves: the claim policy
        client.create_policy(
            policyName=demo.claim_policy_name,
            policyDocument=json.dumps(claim_policy_document(demo)),
        )
        yield client


def run(*argv: str) -> tuple[int, str]:
    out = StringIO()
    base = ["--plants-dir", str(PLANTS), "--releases-dir", str(RELEASES)]
    return claim.main([*base, *argv], out=out), out.getvalue()


DEVICE = ["--plant", "demo", "--serial", "DEMO-0001", "--line", "line-1", "--station", "press-out"]


def test_creates_an_active_claim_with_the_claim_policy(iot: Any, tmp_path: Path) -> None:
    code, text = run(*DEVICE, "--out", str(tmp_path))
    assert code == 0, text
    assert "install Greengrass nucleus 2.16.1" in text
    arn = text.split()[2]
    cert_id = arn.rsplit("/", 1)[1]
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == (
        "ACTIVE"
    )
    attached = iot.list_attached_policies(target=arn)["policies"]
    assert [p["policyName"] for p in attached] == ["lineguard-demo-provisioning-claim"]
    key = tmp_path / "claim-certs" / claim.CLAIM_KEY
    assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_installer_config_has_what_the_plugin_requires(iot: Any, tmp_path: Path) -> None:
    assert run(*DEVICE, "--out", str(tmp_path))[0] == 0
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    plugin = config["services"]["aws.greengrass.FleetProvisioningByClaim"]["configuration"]
    assert set(claim.PLUGIN_REQUIRED) <= set(plugin)
    assert plugin["provisioningTemplate"] == "lineguard-demo-core-devices"
    assert plugin["iotRoleAlias"] == "lineguard-demo-token-exchange"
    assert plugin["templateParameters"] == {
        "SerialNumber": "DEMO-0001",
        "LineName": "line-1",
        "StationName": "press-out",
    }
    # moto invents a new endpoint per call (AWS keeps one per account): check its form
    assert re.fullmatch(r"[a-z0-9]+-ats\.iot\.eu-west-1\.amazonaws\.com", plugin["iotDataEndpoint"])
    assert plugin["iotCredentialEndpoint"].endswith(".credentials.iot.eu-west-1.amazonaws.com")
    # no version: the nucleus would report it over its own jar's (Kernel.initializeNucleusVersion)
    nucleus = config["services"]["aws.greengrass.Nucleus"]
    assert nucleus == {"configuration": {"interpolateComponentConfiguration": True}}


def test_a_device_the_hook_would_refuse_is_refused_now(
    iot: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*DEVICE[:-1], "paint", "--out", str(tmp_path)]
    assert run(*argv)[0] == 1
    assert capsys.readouterr().err.strip() == (
        "error: plant demo would refuse this device: station 'paint' is not a station of "
        "line 'line-1'"
    )
    assert not (tmp_path / "config.yaml").exists()
    assert iot.list_certificates()["certificates"] == []  # nothing created


def test_an_undeployed_plant_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        assert run(*DEVICE, "--out", str(tmp_path))[0] == 1
    assert "lineguard-demo-provisioning-claim not found: deploy the plant first" in (
        capsys.readouterr().err
    )


def test_an_existing_claim_is_reused(iot: Any, tmp_path: Path) -> None:
    assert run(*DEVICE, "--out", str(tmp_path / "first"))[0] == 0
    shared = tmp_path / "first" / "claim-certs"
    second = ["--serial", "DEMO-0002", "--station", "final-check"]
    argv = [*DEVICE[:2], *second, "--line", "line-1", "--claim-dir", str(shared)]
    assert run(*argv, "--out", str(tmp_path / "second"))[0] == 0
    assert len(iot.list_certificates()["certificates"]) == 1


def test_a_reused_claim_must_be_active_and_carry_the_claim_policy(
    iot: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(*DEVICE, "--out", str(tmp_path / "first"))[0] == 0
    shared = tmp_path / "first" / "claim-certs"
    cert_id = claim.certificate_id((shared / claim.CLAIM_CERT).read_text())
    # AWS IoT names certificates by this id: the one moto registered
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
    argv = [*DEVICE, "--claim-dir", str(shared), "--out", str(tmp_path / "second")]
    assert run(*argv)[0] == 1
    assert f"certificate {cert_id} is INACTIVE, not ACTIVE" in capsys.readouterr().err
