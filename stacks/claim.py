"""Prepare a core device for fleet provisioning: claim certificate and the installer's config.

python -m stacks.claim --plant NAME --serial SERIAL --line LINE --station STATION
                       [--claim-dir DIR] [--out DIR] [--root /greengrass/v2]

Creates a claim certificate with the plant's claim policy attached (or reuses the one in
``--claim-dir``), and writes ``config.yaml`` for the Greengrass installer's ``--init-config``:
the ``aws.greengrass.FleetProvisioningByClaim`` plugin's configuration (developer guide
fleet-provisioning-configuration; the plugin's FleetProvisioningByClaimPlugin.java reads these
keys) with this account's data and credentials endpoints, the plant's template and role alias,
and the device's ``templateParameters`` — checked here with the same rules the plant's
pre-provisioning hook applies, so a device that would be refused is refused now. Prints the
installer command. Needs the plant stack deployed (its claim policy and template).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from stacks.config import (
    NUCLEUS,
    PLANTS_DIR,
    RELEASES_DIR,
    PlantConfig,
    PlantConfigError,
    load_plant_release,
    load_plants,
)
from stacks.constructs.provisioning import hook_settings
from stacks.constructs.provisioning.runtime import hook

CLAIM_CERT = "claim.pem.crt"
CLAIM_KEY = "claim.private.pem.key"
# The Amazon root CA the device trusts for IoT Core's ATS endpoints (developer guide
# fleet-provisioning-setup: download https://www.amazontrust.com/repository/AmazonRootCA1.pem).
ROOT_CA = "AmazonRootCA1.pem"
# What the plugin cannot start without (FleetProvisioningByClaimPlugin.java:54-75, "required").
PLUGIN_REQUIRED = (
    "provisioningTemplate",
    "claimCertificatePath",
    "claimCertificatePrivateKeyPath",
    "rootCaPath",
    "iotDataEndpoint",
    "rootPath",
)


class ClaimError(RuntimeError):
    """The device cannot be prepared: refused by the plant's rules, or the plant not deployed."""


def check_device(plant: PlantConfig, serial: str, line: str, station: str) -> None:
    """Refuse what the plant's pre-provisioning hook would refuse, with the hook's own rules."""
    settings = hook.HookSettings.from_dict(hook_settings(plant))
    request = {"SerialNumber": serial, "LineName": line, "StationName": station}
    reason = hook.refusal(settings, request)
    if reason is not None:
        raise ClaimError(f"plant {plant.name} would refuse this device: {reason}")


def create_claim(iot: Any, plant: PlantConfig, claim_dir: Path) -> str:
    """A new active claim certificate with the claim policy attached, written to ``claim_dir``."""
    try:
        iot.get_policy(policyName=plant.claim_policy_name)
    except iot.exceptions.ResourceNotFoundException:
        raise ClaimError(
            f"IoT policy {plant.claim_policy_name} not found: deploy the plant first "
            f"(make deploy PLANT={plant.name})"
        ) from None
    created = iot.create_keys_and_certificate(setAsActive=True)
    claim_dir.mkdir(parents=True, exist_ok=True)
    (claim_dir / CLAIM_CERT).write_text(created["certificatePem"], encoding="utf-8")
    # the private key is never readable by others, not even between write and chmod
    fd = os.open(claim_dir / CLAIM_KEY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as key:
        key.write(created["keyPair"]["PrivateKey"])
    iot.attach_policy(policyName=plant.claim_policy_name, target=created["certificateArn"])
    return str(created["certificateArn"])


def certificate_id(pem: str) -> str:
    """AWS IoT's certificate id: the SHA-256 of the certificate's DER bytes, in hex."""
    import hashlib
    import ssl

    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def check_claim(iot: Any, plant: PlantConfig, cert: Path) -> None:
    """ClaimError unless the claim certificate is active and carries the plant's claim policy."""
    cert_id = certificate_id(cert.read_text(encoding="utf-8"))
    try:
        description = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    except iot.exceptions.ResourceNotFoundException:
        raise ClaimError(f"{cert}: certificate {cert_id} is not registered in AWS IoT") from None
    if description["status"] != "ACTIVE":
        raise ClaimError(f"{cert}: certificate {cert_id} is {description['status']}, not ACTIVE")
    attached = iot.list_attached_policies(target=description["certificateArn"])["policies"]
    if plant.claim_policy_name not in {p["policyName"] for p in attached}:
        raise ClaimError(
            f"{cert}: certificate {cert_id} does not carry the policy {plant.claim_policy_name}"
        )


def installer_config(
    plant: PlantConfig,
    *,
    data_endpoint: str,
    credential_endpoint: str,
    root: str,
    serial: str,
    line: str,
    station: str,
) -> dict[str, Any]:
    """The installer's ``--init-config`` for one device (developer guide fleet-provisioning)."""
    return {
        "services": {
            # No "version": the nucleus takes a version given here over its own jar's
            # (Kernel.initializeNucleusVersion), so it could misreport what runs; install the
            # version the rings deploy instead. The device side's accessControl uses
            # {iot:thingName} (docs/identity.md).
            NUCLEUS: {"configuration": {"interpolateComponentConfiguration": True}},
            "aws.greengrass.FleetProvisioningByClaim": {
                "configuration": {
                    "rootPath": root,
                    "awsRegion": plant.region,
                    "iotDataEndpoint": data_endpoint,
                    "iotCredentialEndpoint": credential_endpoint,
                    "iotRoleAlias": plant.role_alias_name,
                    "provisioningTemplate": plant.provisioning_template_name,
                    "claimCertificatePath": f"{root}/claim-certs/{CLAIM_CERT}",
                    "claimCertificatePrivateKeyPath": f"{root}/claim-certs/{CLAIM_KEY}",
                    "rootCaPath": f"{root}/{ROOT_CA}",
                    "templateParameters": {
                        "SerialNumber": serial,
                        "LineName": line,
                        "StationName": station,
                    },
                }
            },
        }
    }


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Command-line entry point."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m stacks.claim",
        description="Prepare a core device for fleet provisioning (claim certificate, config).",
    )
    parser.add_argument("--plant", required=True)
    parser.add_argument("--serial", required=True)
    parser.add_argument("--line", required=True)
    parser.add_argument("--station", required=True)
    parser.add_argument(
        "--claim-dir", type=Path, help="reuse the claim certificate here (default: create one)"
    )
    parser.add_argument("--out", type=Path, help="where to write (default: build/devices/SERIAL)")
    parser.add_argument("--root", default="/greengrass/v2", help="Greengrass root on the device")
    parser.add_argument("--plants-dir", default=str(PLANTS_DIR))
    parser.add_argument("--releases-dir", default=str(RELEASES_DIR))
    args = parser.parse_args(argv)
    out_dir = args.out or Path("build", "devices", args.serial)
    try:
        (plant,) = load_plants(args.plants_dir, [args.plant])
        release = load_plant_release(plant, args.releases_dir)
        check_device(plant, args.serial, args.line, args.station)
    except PlantConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ClaimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    versions = sorted(
        {
            entry.components[NUCLEUS]
            for entry in release.rings.values()
            if NUCLEUS in entry.components
        }
    )
    import boto3

    iot = boto3.client("iot", region_name=plant.region)
    try:
        if args.claim_dir is None:
            claim_dir = out_dir / "claim-certs"
            arn = create_claim(iot, plant, claim_dir)
            out.write(f"claim certificate {arn} (policy {plant.claim_policy_name})\n")
        else:
            claim_dir = args.claim_dir
            missing = [n for n in (CLAIM_CERT, CLAIM_KEY) if not (claim_dir / n).is_file()]
            if missing:
                raise ClaimError(f"{claim_dir}: no {' or '.join(missing)}")
            check_claim(iot, plant, claim_dir / CLAIM_CERT)
        data = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
        creds = iot.describe_endpoint(endpointType="iot:CredentialProvider")["endpointAddress"]
    except ClaimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    config = installer_config(
        plant,
        data_endpoint=data,
        credential_endpoint=creds,
        root=args.root,
        serial=args.serial,
        line=args.line,
        station=args.station,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    nucleus = " or ".join(versions) or "the latest"
    out.write(
        f"wrote {out_dir / 'config.yaml'}; install Greengrass nucleus {nucleus} (what the "
        f"rings deploy) on the device, with {claim_dir}/ copied to "
        f"{args.root}/claim-certs/ and {ROOT_CA} to {args.root}/:\n"
        f'  sudo -E java -Droot="{args.root}" -Dlog.store=FILE -jar GreengrassInstaller/lib/'
        "Greengrass.jar --trusted-plugin GreengrassInstaller/aws.greengrass.FleetProvisioningByClaim"
        ".jar --init-config config.yaml --component-default-user ggc_user:ggc_group "
        "--setup-system-service true\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
