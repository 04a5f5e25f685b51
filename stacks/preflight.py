"""Check, before ``cdk deploy``, that a plant can be deployed with the credentials at hand.

python -m stacks.preflight --plant NAME [--plants-dir plants] [--releases-dir releases]

One line and a non-zero exit for: a broken plant or release file, no AWS credentials,
credentials for another account than the plant file's ``account`` (the shipped plant files
carry the placeholder 123456789012: put your account and region in the plant file first), or a
region not bootstrapped for the CDK. On success it prints the stacks ``make deploy`` will
deploy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from stacks.config import (
    PLANTS_DIR,
    RELEASES_DIR,
    PlantConfig,
    PlantConfigError,
    load_plant_release,
    load_plants,
    shared_stack_name,
)


class PreflightError(RuntimeError):
    """The plant cannot be deployed with these credentials; the message says why and what to do."""


def check_credentials(plant: PlantConfig, sts: Any, where: str) -> str:
    """The caller's account, if it is the plant's; PreflightError otherwise."""
    try:
        account = str(sts.get_caller_identity()["Account"])
    except Exception as exc:  # botocore's NoCredentialsError, ClientError, endpoint errors
        raise PreflightError(f"no usable AWS credentials ({type(exc).__name__}: {exc})") from None
    if account != plant.account:
        raise PreflightError(
            f"{where}: account: the plant file says {plant.account}, but the AWS credentials "
            f"are for account {account}; set account (and region) in {where} to where the "
            "plant deploys, or use that account's credentials"
        )
    return account


# What `cdk bootstrap` leaves (the default qualifier): the CDK CLI reads it before deploying.
BOOTSTRAP_PARAMETER = "/cdk-bootstrap/hnb659fds/version"


def check_bootstrap(plant: PlantConfig, ssm: Any) -> None:
    """PreflightError unless ``cdk bootstrap`` ran in the plant's account and region."""
    try:
        ssm.get_parameter(Name=BOOTSTRAP_PARAMETER)
    except ssm.exceptions.ParameterNotFound:
        raise PreflightError(
            f"{plant.account}/{plant.region} is not bootstrapped for the CDK: run "
            f"make bootstrap PLANT={plant.name}"
        ) from None


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Command-line entry point."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m stacks.preflight",
        description="Check that a plant can be deployed with the AWS credentials at hand.",
    )
    parser.add_argument("--plant", required=True, help="plant name (plants/<plant>.yaml)")
    parser.add_argument("--plants-dir", default=str(PLANTS_DIR))
    parser.add_argument("--releases-dir", default=str(RELEASES_DIR))
    args = parser.parse_args(argv)
    try:
        (plant,) = load_plants(args.plants_dir, [args.plant])
        load_plant_release(plant, args.releases_dir)
    except PlantConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import boto3

    where = f"{args.plants_dir}/{plant.name}.yaml"
    try:
        check_credentials(plant, boto3.client("sts", region_name=plant.region), where)
        check_bootstrap(plant, boto3.client("ssm", region_name=plant.region))
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out.write(
        f"ok: deploying {shared_stack_name(plant.account, plant.region)} and LineGuard-Plant-{plant.name} "
        f"to {plant.account}/{plant.region}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
