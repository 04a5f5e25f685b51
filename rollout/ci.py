"""Start the CodeBuild promotion from CI and follow it: ``python -m rollout start-promotion``.

The promotion itself always runs in the Shared stack's CodeBuild project, under the promotion
role (which only CodeBuild may assume) and within the project's own timeout, which covers every
ring's bake. A CI job only starts a build of that project with the model package (and the plant)
as environment overrides, then follows the build's phases for as long as its short session
allows; leaving early stops nothing (the build goes on, and its state is in S3). The role CI
assumes (``GitHubStarter`` in the Promotion construct, through GitHub's OIDC provider) may do
exactly ``codebuild:StartBuild`` and ``codebuild:BatchGetBuilds`` on that one project.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollout.errors import AwsError

DONE = ("SUCCEEDED", "FAILED", "FAULT", "TIMED_OUT", "STOPPED")
"""CodeBuild ``buildStatus`` values of a finished build (API reference, Build)."""


@dataclass(frozen=True)
class Followed:
    """Where the build stood when following ended."""

    build_id: str
    status: str  # a DONE value, or IN_PROGRESS when following stopped first
    phase: str


def _call(client: Any, operation: str, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr(client, operation)(**kwargs)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise AwsError(
            f"codebuild.{operation} ({kwargs.get('projectName') or kwargs.get('ids')}): "
            f"{err.get('Code', 'Error')}: {err.get('Message', exc)}"
        ) from exc
    except BotoCoreError as exc:
        raise AwsError(f"codebuild.{operation}: {exc}") from exc


def start_promotion(codebuild: Any, project: str, *, model_package_arn: str, plant: str) -> str:
    """``StartBuild`` of the promotion project for one plant and model package; the build id."""
    response = _call(
        codebuild,
        "start_build",
        projectName=project,
        environmentVariablesOverride=[
            {"name": "MODEL_PACKAGE_ARN", "value": model_package_arn, "type": "PLAINTEXT"},
            {"name": "PLANTS", "value": plant, "type": "PLAINTEXT"},
        ],
    )
    return str(response["build"]["id"])


def follow(
    codebuild: Any,
    build_id: str,
    *,
    for_s: float,
    poll_s: float = 30.0,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Followed:
    """Poll ``BatchGetBuilds`` until the build is done or ``for_s`` passed; log phase changes."""
    deadline = clock() + for_s
    last = ""
    while True:
        builds = _call(codebuild, "batch_get_builds", ids=[build_id]).get("builds", [])
        if not builds:
            raise AwsError(f"codebuild.batch_get_builds: no build {build_id}")
        build = builds[0]
        status, phase = str(build.get("buildStatus")), str(build.get("currentPhase"))
        line = f"{build_id}: {phase.lower()} ({status.lower()})"
        if line != last:
            log(line)
            last = line
        if status in DONE or clock() >= deadline:
            return Followed(build_id, status, phase)
        sleep(min(poll_s, max(0.0, deadline - clock())))
