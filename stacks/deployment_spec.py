"""The one definition of a ring's Greengrass deployment.

:func:`deployment_spec` returns the ``greengrassv2.create_deployment`` request exactly as boto3
takes it; the rollout controller sends it as is. :func:`to_cfn_properties` turns the same request
into ``AWS::GreengrassV2::Deployment`` properties for the Plant stack, so ``cdk deploy`` always
reproduces what the fleet runs. No CDK import here: the rollout CLI runs without Node.

A deployment to a thing group is a continuous IoT job that also serves devices that join the
group later ("Deployments are continuous", Greengrass developer guide, manage-deployments). Abort
criteria cancel that job once they trip, and a cancelled deployment reaches no device added
afterwards (guide, cancel-deployments; IoT developer guide, iot-jobs-lifecycle: "CANCELED").
So only the rollout controller's deployments carry them; the Plant stack's standing deployment
per ring is built with ``abort=False``.

Every ring's deployment tells the inspector its ring: ``{"ring": "<ring>"}`` is merged into
``com.lineguard.Inspector``'s configuration (after the release's own merge, so it wins), and the
inspector's health messages carry it, which is how the cloud keeps the rollout's figures per
ring. :func:`release_configuration` takes it out again when a deployment is read back.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from stacks.config import INSPECTOR, PlantConfig, Release, RingRelease

RING_SETTING = "ring"
"""The inspector configuration key each ring's deployment sets to the ring's name."""


class NoRingRelease(LookupError):
    """The release has no entry for the ring, so the ring gets no deployment."""


def deployment_name(plant: PlantConfig, ring: str) -> str:
    """Greengrass deployment name of a ring (stable across releases)."""
    return f"lineguard-{plant.name}-{ring}"


def ring_merges(entry: RingRelease, ring: str) -> dict[str, dict[str, Any]]:
    """The configuration merges of a ring's deployment: the release's, and the inspector's ring."""
    merges = {name: dict(merge) for name, merge in entry.configuration.items()}
    if INSPECTOR in entry.components:
        merges[INSPECTOR] = {**merges.get(INSPECTOR, {}), RING_SETTING: ring}
    return merges


def release_configuration(
    configuration: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """A deployment's configuration merges as a release records them: without the inspector's
    ``ring``, which :func:`deployment_spec` adds to every ring's deployment itself."""
    out: dict[str, dict[str, Any]] = {}
    for name, merge in configuration.items():
        kept = {k: v for k, v in merge.items() if not (name == INSPECTOR and k == RING_SETTING)}
        if kept or name != INSPECTOR:
            out[name] = kept
    return out


def _ring_release(plant: PlantConfig, ring: str, release: Release | RingRelease) -> RingRelease:
    plant.ring(ring)  # KeyError naming the plant's rings for an unknown ring
    if isinstance(release, RingRelease):
        return release
    if release.plant != plant.name:
        raise ValueError(f"release is for plant {release.plant!r}, not {plant.name!r}")
    entry = release.ring(ring)
    if entry is None:
        raise NoRingRelease(f"plant {plant.name!r}: ring {ring!r} has no release")
    return entry


def deployment_spec(
    plant: PlantConfig,
    ring: str,
    release: Release | RingRelease,
    *,
    abort: bool = True,
    reset: Collection[str] = (),
) -> dict[str, Any]:
    """The ``greengrassv2.create_deployment`` keyword arguments for ``ring`` of ``plant``.

    Args:
        plant: the plant configuration.
        ring: the ring's name (one of ``plant.ring_names``).
        release: the plant's release (the ring's entry is used) or the ring's entry itself.
        abort: include the plant's abort criteria (``abortConfig``). True for a rollout's
            deployment; False for the standing deployment, which must keep serving devices
            that join the ring later.
        reset: components whose whole configuration is reset to their recipe's defaults
            before the ring's merge (``"reset": [""]``: "the AWS IoT Greengrass Core software
            runs the reset update before the merge update", and a value with no default is
            removed — developer guide, update-component-configurations). A rollback resets the
            components it takes back, so keys the newer version added do not stay behind; the
            inspector's ``ring`` is in the merge, so a reset never leaves a device without it.

    Raises:
        KeyError: ``ring`` is not a ring of ``plant``.
        NoRingRelease: the release has no entry for ``ring``.
    """
    entry = _ring_release(plant, ring, release)
    policy = plant.deployment
    merges = ring_merges(entry, ring)
    components: dict[str, Any] = {}
    for name, version in sorted(entry.components.items()):
        spec: dict[str, Any] = {"componentVersion": version}
        merge = merges.get(name)
        update: dict[str, Any] = {}
        if merge:
            update["merge"] = json.dumps(dict(merge), sort_keys=True, separators=(",", ":"))
        if name in reset:
            update["reset"] = [""]
        if update:
            spec["configurationUpdate"] = update
        components[name] = spec
    rate = policy.rollout
    request: dict[str, Any] = {
        "targetArn": plant.ring_group_arn(ring),
        "deploymentName": deployment_name(plant, ring),
        "components": components,
        "deploymentPolicies": {
            "failureHandlingPolicy": "ROLLBACK",
            "componentUpdatePolicy": {
                "timeoutInSeconds": policy.component_update_timeout_seconds,
                "action": "NOTIFY_COMPONENTS",
            },
            "configurationValidationPolicy": {
                "timeoutInSeconds": policy.configuration_validation_timeout_seconds,
            },
        },
        "iotJobConfiguration": {
            "jobExecutionsRolloutConfig": {
                "exponentialRate": {
                    "baseRatePerMinute": rate.base_rate_per_minute,
                    "incrementFactor": float(rate.increment_factor),
                    "rateIncreaseCriteria": {
                        "numberOfSucceededThings": rate.rate_increase_after_succeeded
                    },
                },
                "maximumPerMinute": rate.maximum_per_minute,
            },
            "abortConfig": {
                "criteriaList": [
                    {
                        "failureType": c.failure_type,
                        "action": "CANCEL",
                        "thresholdPercentage": float(c.threshold_percentage),
                        "minNumberOfExecutedThings": c.min_executed,
                    }
                    for c in policy.abort
                ]
            },
            "timeoutConfig": {"inProgressTimeoutInMinutes": policy.in_progress_timeout_minutes},
        },
        "tags": {"lineguard:plant": plant.name, "lineguard:ring": ring},
    }
    if not abort:  # the standing deployment: a cancelled job would serve no device added later
        del request["iotJobConfiguration"]["abortConfig"]
    return request


def _pascal(key: str) -> str:
    return key[0].upper() + key[1:]


# Keys whose values are maps keyed by user data (component names, tag keys): keep those keys.
_USER_KEYED = {"components", "tags"}


def _convert(value: Any, parent: str | None = None) -> Any:
    if isinstance(value, dict):
        if parent in _USER_KEYED:
            return {k: _convert(v) for k, v in value.items()}
        return {_pascal(k): _convert(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_convert(v) for v in value]
    return value


def to_cfn_properties(spec: dict[str, Any]) -> dict[str, Any]:
    """``AWS::GreengrassV2::Deployment`` properties for a ``create_deployment`` request.

    CloudFormation spells the same fields in PascalCase (``targetArn`` → ``TargetArn``,
    ``iotJobConfiguration`` → ``IotJobConfiguration``) and keeps component names and tag keys
    as they are. ``clientToken`` has no CloudFormation equivalent and is dropped.
    """
    request = {k: v for k, v in spec.items() if k != "clientToken"}
    return {_pascal(k): _convert(v, k) for k, v in request.items()}
