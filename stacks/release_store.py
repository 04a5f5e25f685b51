"""The durable home of the release files: ``s3://<artifact bucket>/rollout/releases/<plant>.json``.

The rollout controller writes a plant's release there every time a ring is deployed or rolled
back (``python -m rollout ... --releases-bucket``), and ``cdk deploy -c
releases_dir=s3://<bucket>/rollout/releases/`` synthesises every ring's deployment from the same
objects, so a ``cdk deploy`` after a promotion reproduces what the controller deployed instead of
reverting it to the repository's copy. The repository's ``releases/`` is the bootstrap: what a
first deployment runs before anything was promoted (docs/deploy.md, docs/rollout.md).

No CDK import here: the rollout CLI uses it without Node.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

RELEASES_PREFIX = "rollout/releases/"


class ReleaseStoreError(Exception):
    """The release objects could not be read or written; the message names the bucket and key."""


def releases_url(bucket: str) -> str:
    """The ``releases_dir`` a deploy of a plant whose artifacts are in ``bucket`` uses."""
    return f"s3://{bucket}/{RELEASES_PREFIX}"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` → (bucket, prefix ending in ``/``, or empty)."""
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise ReleaseStoreError(f"{url!r}: not an s3://<bucket>/<prefix>/ URL")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, (prefix if not prefix or prefix.endswith("/") else prefix + "/")


def download_releases(s3: Any, url: str, dest: Path, *, fallback: Path | None = None) -> Path:
    """Copy every ``*.json`` under ``url`` into ``dest``; with ``fallback``, start from a copy
    of that directory (the repository's bootstrap releases) and overlay the downloaded ones."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_url(url)
    dest.mkdir(parents=True, exist_ok=True)
    if fallback is not None and fallback.is_dir():
        for path in fallback.glob("*.json"):
            shutil.copy2(path, dest / path.name)
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                key = str(item["Key"])
                name = key[len(prefix) :]
                if "/" in name or not name.endswith(".json"):
                    continue
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                (dest / name).write_bytes(body)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket" and fallback is not None:
            # the Shared stack (which makes the bucket) is not deployed yet: nothing was ever
            # promoted, so the bootstrap releases are what every ring runs
            return dest
        raise ReleaseStoreError(
            f"s3://{bucket}/{prefix}: cannot read the releases ({exc})"
        ) from exc
    except BotoCoreError as exc:
        raise ReleaseStoreError(
            f"s3://{bucket}/{prefix}: cannot read the releases ({exc})"
        ) from exc
    return dest


def upload_release(s3: Any, bucket: str, path: Path, prefix: str = RELEASES_PREFIX) -> str:
    """Put one release file under the prefix; return its ``s3://`` URL."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = f"{prefix}{path.name}"
    try:
        s3.put_object(
            Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType="application/json"
        )
    except (ClientError, BotoCoreError) as exc:
        raise ReleaseStoreError(f"s3://{bucket}/{key}: cannot write the release ({exc})") from exc
    return f"s3://{bucket}/{key}"


def main(argv: list[str] | None = None) -> int:
    """``python -m stacks.release_store url --plant P``: the releases URL ``make deploy`` uses."""
    import argparse

    from stacks.config import PLANTS_DIR, PlantConfigError, load_plants

    parser = argparse.ArgumentParser(
        prog="python -m stacks.release_store",
        description="Print where the rollout controller keeps a plant's release.",
    )
    parser.add_argument("command", choices=("url",))
    parser.add_argument("--plant", required=True)
    parser.add_argument("--plants-dir", default=str(PLANTS_DIR))
    args = parser.parse_args(argv)
    try:
        (plant,) = load_plants(args.plants_dir, [args.plant])
    except PlantConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(releases_url(plant.artifact_bucket_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
