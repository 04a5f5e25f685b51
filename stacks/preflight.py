"""Check, before ``cdk deploy``, that a plant can be deployed with the credentials at hand.

python -m stacks.preflight --plant NAME [--plants-dir plants] [--releases-dir releases]

One line and a non-zero exit for: a broken plant or release file, no AWS credentials,
credentials for another account than the plant file's ``account`` (the shipped plant files
carry the placeholder 123456789012: put your account and region in the plant file first), a
region not bootstrapped for the CDK, a deploy that would replace what the rollout controller
deployed (releases from the repository once the controller keeps the plant's release in S3), or
a promotion in progress (the deploy would replace the deployments it is rolling out). On success
it prints the stacks ``make deploy`` will deploy.
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


def _s3_object(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when it (or its bucket: nothing deployed yet) is absent."""
    from botocore.exceptions import ClientError

    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "NoSuchBucket", "404"):
            return None
        raise PreflightError(f"s3://{bucket}/{key}: cannot read it ({exc})") from None


def check_release_owner(plant: PlantConfig, s3: Any, releases: str) -> None:
    """PreflightError when this deploy would replace what the rollout controller deployed.

    The controller keeps the plant's release at ``s3://<artifact bucket>/rollout/releases/`` and
    its promotion state at ``.../rollout/state/`` (stacks/release_store.py, rollout/state.py).
    A deploy from another release source (the repository's bootstrap copy) would revert every
    promoted ring at once, ungated; a deploy while a promotion is in progress or rolling back
    would replace the deployments it is waiting on (a new revision cancels the previous one's
    job: Greengrass developer guide, check-deployment-status).
    """
    import json

    from rollout.state import S3_STATE_PREFIX
    from stacks.release_store import RELEASES_PREFIX, releases_url

    bucket = plant.artifact_bucket_name
    url = releases_url(bucket)
    state = _s3_object(s3, bucket, f"{S3_STATE_PREFIX}{plant.name}.json")
    if state is not None:
        try:
            doc = json.loads(state)
        except ValueError:
            doc = {}
        status = doc.get("status") if isinstance(doc, dict) else None
        if status in ("in_progress", "rolling_back"):
            raise PreflightError(
                f"s3://{bucket}/{S3_STATE_PREFIX}{plant.name}.json: the promotion of "
                f"com.lineguard.Model {doc.get('model_version')} is {status.replace('_', ' ')}; "
                "a deploy now would replace the ring deployments it is rolling out. Let it "
                f"finish, or run `python -m rollout rollback --plant {plant.name} "
                f"--artifact-bucket {bucket}` first"
            )
    owned = _s3_object(s3, bucket, f"{RELEASES_PREFIX}{plant.name}.json") is not None
    if owned and releases.rstrip("/") + "/" != url:
        raise PreflightError(
            f"the rollout controller keeps plant {plant.name}'s release at {url}{plant.name}.json; "
            f"deploying from {releases} would revert every promoted ring. Deploy with "
            f"-c releases_dir={url} (make deploy does)"
        )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Command-line entry point."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m stacks.preflight",
        description="Check that a plant can be deployed with the AWS credentials at hand.",
    )
    parser.add_argument("--plant", required=True, help="plant name (plants/<plant>.yaml)")
    parser.add_argument("--plants-dir", default=str(PLANTS_DIR))
    parser.add_argument(
        "--releases-dir",
        default=str(RELEASES_DIR),
        help="where the deploy takes the releases from: a directory, or the s3:// URL the "
        "rollout controller writes (make deploy passes it)",
    )
    args = parser.parse_args(argv)
    try:
        (plant,) = load_plants(args.plants_dir, [args.plant])
        if not str(args.releases_dir).startswith("s3://"):
            load_plant_release(plant, args.releases_dir)
    except PlantConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import boto3

    where = f"{args.plants_dir}/{plant.name}.yaml"
    try:
        check_credentials(plant, boto3.client("sts", region_name=plant.region), where)
        check_bootstrap(plant, boto3.client("ssm", region_name=plant.region))
        check_release_owner(plant, boto3.client("s3", region_name=plant.region), args.releases_dir)
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
