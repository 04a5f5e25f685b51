"""Plant files (``plants/<plant>.yaml``) and release files (``releases/<plant>.json``).

Both are read once into frozen, typed objects and validated; every problem raises
:class:`PlantConfigError` (or :class:`ReleaseError`) with one line naming the file and the field,
e.g. ``plants/demo.yaml: rings[1].percent: Input should be greater than 0``.

This module imports no CDK: the rollout controller uses it without Node. Nothing else in the
repository reads plant YAML or release JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

PLANTS_DIR = Path("plants")
RELEASES_DIR = Path("releases")
RELEASE_FORMAT: Final = "lineguard.release/1"

INSPECTOR = "com.lineguard.Inspector"
MODEL = "com.lineguard.Model"
LINE_BRIDGE = "com.lineguard.LineBridge"
LINEGUARD_COMPONENTS = (INSPECTOR, MODEL, LINE_BRIDGE)
REQUIRED_COMPONENTS = (INSPECTOR, MODEL)

NUCLEUS = "aws.greengrass.Nucleus"
LOG_MANAGER = "aws.greengrass.LogManager"
SHADOW_MANAGER = "aws.greengrass.ShadowManager"
# AWS-provided components a release may name, each only at a pinned version: a deployment that
# names a component without a version would take its newest patch, and a nucleus update restarts
# every component on the device (developer guide, greengrass-nucleus-component: "we recommend that
# you directly include your preferred version"). Versions from the developer guide's document
# history (document-history.html): Greengrass Core v2.16.1 (2025-12-23); log manager v2.3.11 and
# shadow manager v2.3.12, released with nucleus v2.16.0 (2025-11-06). Tag v2.16.1 is in
# github.com/aws-greengrass/aws-greengrass-nucleus (6d85c4e).
AWS_COMPONENTS: Final[Mapping[str, tuple[str, ...]]] = {
    NUCLEUS: ("2.16.1",),
    LOG_MANAGER: ("2.3.11",),
    SHADOW_MANAGER: ("2.3.12",),
}
KNOWN_COMPONENTS = (*LINEGUARD_COMPONENTS, *AWS_COMPONENTS)
# The inspector's accessControl names its topics with {iot:thingName}; the nucleus interpolates
# recipe variables in component configuration only when this is true (default false; developer
# guide greengrass-nucleus-component, configuration "interpolateComponentConfiguration"). A nucleus
# configuration in the same deployment decides it for that deployment (aws-greengrass-nucleus
# KernelConfigResolver.java shouldInterpolateConfiguration, DeviceConfiguration.java
# DEVICE_PARAM_INTERPOLATE_COMPONENT_CONFIGURATION, v2.16.1 lines 199-220 / 86).
INTERPOLATE_CONFIGURATION = "interpolateComponentConfiguration"
# Settings that differ per device reach it from its provisioning, never from a ring's release:
# a ring spans many lines, stations and PLCs.
PER_DEVICE_SETTINGS: Final[Mapping[str, tuple[str, ...]]] = {
    INSPECTOR: ("line", "station"),
    LINE_BRIDGE: ("device", "controller"),
}

PLANT_NAME = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
LINE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$"
RING_NAME = r"^[a-z][a-z0-9-]{0,30}$"
ACCOUNT = r"^[0-9]{12}$"
REGION = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
# Lambda environment variables share 4 KB; the allow-list travels in one of them.
MAX_ALLOW_LIST_CHARS = 3000

# Plant size. Every line is one thing group, a CloudFormation resource (the provisioning template
# adds each device to its line's group and cannot create groups). CloudFormation quotas
# (cloudformation-limits.html): 500 resources per template, and at most 2,500 resources created,
# updated or deleted in one operation of a stack and its nested stacks. The line groups are
# spread over LINE_STACKS nested stacks by a hash of the line name, so a line never moves to
# another stack when lines are added or removed; 2,000 lines leave room under 2,500 for the rest
# of the plant stack.
MAX_LINES = 2000
CFN_MAX_RESOURCES_PER_STACK = 500
CFN_MAX_RESOURCES_PER_OPERATION = 2500
LINE_STACKS = 5
MAX_LINES_PER_STACK = 490


def artifact_bucket_name(account: str, region: str) -> str:
    """Name of the Shared stack's artifact bucket in an account and region."""
    return f"lineguard-artifacts-{account}-{region}"


def access_log_bucket_name(account: str, region: str) -> str:
    """Name of the Shared stack's S3 server-access-log bucket in an account and region."""
    return f"lineguard-access-logs-{account}-{region}"


def line_stack(line: str) -> int:
    """Which of the plant's ``LINE_STACKS`` nested stacks holds a line's thing group.

    A hash of the name alone, so adding or removing other lines never moves a line's group: a
    group that moved between stacks would be deleted by the stack it left after the other one
    created it again, under the same name.
    """
    return int.from_bytes(hashlib.sha256(line.encode()).digest()[:8], "big") % LINE_STACKS


class PlantConfigError(ValueError):
    """A plant file, release file or plant selection is invalid; the message is one line."""

    def __init__(self, where: Path | str, field_path: str, message: str) -> None:
        self.where = str(where)
        self.field_path = field_path
        self.message = message
        super().__init__(
            f"{where}: {field_path}: {message}" if field_path else f"{where}: {message}"
        )


class ReleaseError(PlantConfigError):
    """A release file is missing, malformed, or does not fit its plant."""


def _reject_duplicates(names: list[str], what: str, field: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(
                f"duplicate {what} name {name!r} ({field}[{seen[name]}] and {field}[{i}])"
            )
        seen[name] = i


def _no_bare_int(value: Any) -> Any:
    # YAML reads 123456789012 as an int and would drop leading zeros: insist on a quoted string.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be a quoted string (e.g. '012345678901'), not a number")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Station(_Frozen):
    """One inspection station on a line: its name and how many cameras its device serves."""

    name: Annotated[str, Field(pattern=LINE_NAME)]
    cameras: Annotated[int, Field(ge=1, le=16)] = 1


class Line(_Frozen):
    """A production line and its stations (names unique within the line)."""

    name: Annotated[str, Field(pattern=LINE_NAME)]
    stations: Annotated[tuple[Station, ...], Field(min_length=1)]

    @field_validator("stations")
    @classmethod
    def _unique_stations(cls, stations: tuple[Station, ...]) -> tuple[Station, ...]:
        _reject_duplicates([s.name for s in stations], "station", "stations")
        return stations


class Ring(_Frozen):
    """A rollout ring: a share of the plant's devices, how long a candidate model runs there as
    a shadow first (scoring every frame, deciding nothing), and how long a release bakes."""

    name: Annotated[str, Field(pattern=RING_NAME)]
    percent: Annotated[float, Field(gt=0, le=100)]
    bake_minutes: Annotated[int, Field(ge=0, le=7 * 24 * 60)] = 30
    shadow_minutes: Annotated[int, Field(ge=0, le=7 * 24 * 60)] = 0

    @model_validator(mode="after")
    def _shadow_hands_over_to_a_bake(self) -> Ring:
        if self.shadow_minutes and not self.bake_minutes:
            raise ValueError(
                "shadow_minutes needs bake_minutes > 0: an undecided shadow phase hands over "
                "to the bake, whose gates must decide"
            )
        return self


class RolloutRate(_Frozen):
    """IoT job exponential rollout rate for a ring's deployment."""

    base_rate_per_minute: Annotated[int, Field(ge=1, le=1000)] = 5
    increment_factor: Annotated[float, Field(ge=1, le=5)] = 2.0
    rate_increase_after_succeeded: Annotated[int, Field(ge=1)] = 5
    maximum_per_minute: Annotated[int, Field(ge=1, le=1000)] = 100

    @model_validator(mode="after")
    def _base_below_max(self) -> RolloutRate:
        if self.base_rate_per_minute > self.maximum_per_minute:
            raise ValueError("base_rate_per_minute must not exceed maximum_per_minute")
        return self


class AbortCriterion(_Frozen):
    """Cancel the IoT job when this share of executed devices failed this way."""

    failure_type: Literal["FAILED", "REJECTED", "TIMED_OUT", "ALL"]
    threshold_percentage: Annotated[float, Field(gt=0, le=100)]
    min_executed: Annotated[int, Field(ge=1)]


def _default_abort() -> tuple[AbortCriterion, ...]:
    return (
        AbortCriterion(failure_type="FAILED", threshold_percentage=10, min_executed=3),
        AbortCriterion(failure_type="TIMED_OUT", threshold_percentage=20, min_executed=3),
    )


class DeploymentPolicy(_Frozen):
    """Greengrass deployment policy used for every ring (failure handling is always ROLLBACK)."""

    component_update_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 120
    configuration_validation_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    in_progress_timeout_minutes: Annotated[int, Field(ge=1, le=10080)] = 60
    rollout: RolloutRate = RolloutRate()
    abort: Annotated[tuple[AbortCriterion, ...], Field(min_length=1)] = Field(
        default_factory=_default_abort
    )

    @field_validator("abort")
    @classmethod
    def _unique_failure_types(cls, abort: tuple[AbortCriterion, ...]) -> tuple[AbortCriterion, ...]:
        _reject_duplicates([a.failure_type for a in abort], "failure_type", "abort")
        return abort


class Gates(_Frozen):
    """Rollout quality gates the controller checks on each ring (docs/rollout.md, "Gates").

    Reject and manual rates are compared with concurrent control devices on the previous
    version at the same line and station by a sequential test planned from ``tolerated_change``
    (a good model: false rollback at most ``alpha`` per ring) and ``min_detectable_change``
    (detected with probability at least 1 - ``beta``), both relative changes of the rate.
    """

    min_inspections: Annotated[int, Field(ge=0)] = 200
    max_deployment_failure_ratio: Annotated[float, Field(ge=0, le=1)] = 0.05
    min_healthy_share: Annotated[float, Field(ge=0, le=1)] = 0.95
    inference_p99_budget_ms: Annotated[float, Field(gt=0)] = 100.0
    max_p99_regression: Annotated[float, Field(ge=1)] = 1.25
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    beta: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    tolerated_change: Annotated[float, Field(ge=0)] = 0.25
    min_detectable_change: Annotated[float, Field(gt=0)] = 1.0
    max_bake_extensions: Annotated[int, Field(ge=0, le=20)] = 2
    max_manual_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    min_reject_precision: Annotated[float, Field(gt=0, le=1)] | None = None
    """Operator-confirmed reject precision a candidate must not be below with confidence
    (``reject_precision`` gate; None: off). Needs a review station whose operators review
    rejects."""
    min_reviewed_rejects: Annotated[int, Field(ge=1)] = 30
    """Fewer reviewed rejects of the candidate in the bake: ``reject_precision`` is
    inconclusive."""

    @model_validator(mode="before")
    @classmethod
    def _replaced_fields(cls, data: Any) -> Any:
        replaced = {
            "reject_rate_tolerance": "tolerated_change and min_detectable_change",
            "reject_rate_abs_tolerance": "tolerated_change and min_detectable_change",
            "min_shadow_agreement": "the shadow reject-rate test (tolerated_change and "
            "min_detectable_change)",
            "min_shadow_kappa": "the shadow reject-rate test (tolerated_change and "
            "min_detectable_change)",
        }
        if isinstance(data, dict):
            for old, new in replaced.items():
                if old in data:
                    raise ValueError(
                        f"{old} was replaced by {new} (the gates compare with control devices "
                        "by a sequential test: docs/rollout.md, Gates)"
                    )
        return data

    @model_validator(mode="after")
    def _detectable_beyond_tolerated(self) -> Gates:
        if self.min_detectable_change <= self.tolerated_change:
            raise ValueError(
                f"min_detectable_change ({self.min_detectable_change}) must be larger than "
                f"tolerated_change ({self.tolerated_change})"
            )
        return self


class Calibration(_Frozen):
    """Target rates on good parts that training calibrates the model's thresholds to, and that
    the training pipeline's registration gate checks on the held-out test split.

    Defaults equal ``training.calibration``'s (a test keeps them equal; the promotion job ships
    this module without ``training/``).
    """

    target_false_reject_rate: Annotated[float, Field(gt=0, lt=0.5)] = 0.005
    target_manual_rate: Annotated[float, Field(ge=0, lt=0.5)] = 0.02


def strictest_calibration(plants: Iterable[PlantConfig]) -> Calibration:
    """The lowest of each target over ``plants`` (the defaults when there are none): what a
    training pipeline shared by these plants calibrates to and gates on by default, so a model
    it registers meets every one of their targets."""
    chosen = [p.calibration for p in plants]
    if not chosen:
        return Calibration()
    return Calibration(
        target_false_reject_rate=min(c.target_false_reject_rate for c in chosen),
        target_manual_rate=min(c.target_manual_rate for c in chosen),
    )


class Monitoring(_Frozen):
    """Alarm thresholds and result retention for the plant's dashboard and alarms."""

    health_interval_seconds: Annotated[int, Field(ge=10, le=3600)] = 60
    reject_burst_per_minute: Annotated[int, Field(ge=1)] = 30
    line_reject_rate_alarm: Annotated[float, Field(gt=0, le=1)] = 0.2
    journal_backlog_alarm: Annotated[int, Field(ge=1)] = 10000
    silent_device_share: Annotated[float, Field(gt=0, le=1)] = 0.1
    results_retention_days: Annotated[int, Field(ge=1, le=3650)] = 365


class Provisioning(_Frozen):
    """Fleet provisioning by claim: which serials may join the plant."""

    serial_pattern: str = r"^[A-Z0-9][A-Z0-9-]{5,31}$"
    allow_list: tuple[str, ...] = ()

    @field_validator("serial_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        if not (pattern.startswith("^") and pattern.endswith("$")):
            raise ValueError("must be anchored with ^ and $")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return pattern

    @model_validator(mode="after")
    def _allow_list_matches(self) -> Provisioning:
        pattern = re.compile(self.serial_pattern)
        for i, serial in enumerate(self.allow_list):
            if not pattern.match(serial):
                raise ValueError(f"allow_list[{i}] {serial!r} does not match serial_pattern")
        _reject_duplicates(list(self.allow_list), "serial", "allow_list")
        if len(",".join(self.allow_list)) > MAX_ALLOW_LIST_CHARS:
            raise ValueError(
                f"allow_list is longer than {MAX_ALLOW_LIST_CHARS} characters; "
                "use a narrower serial_pattern instead"
            )
        return self


class PlantConfig(_Frozen):
    """One plant: where it runs, its lines and stations, rings, deployment policy, gates and
    the target rates its models are calibrated to."""

    name: Annotated[str, Field(pattern=PLANT_NAME)]
    account: Annotated[str, BeforeValidator(_no_bare_int), Field(pattern=ACCOUNT)]
    region: Annotated[str, Field(pattern=REGION)]
    expected_devices: Annotated[int, Field(ge=1, le=100000)]
    lines: Annotated[tuple[Line, ...], Field(min_length=1)]
    rings: Annotated[tuple[Ring, ...], Field(min_length=1, max_length=8)]
    deployment: DeploymentPolicy = DeploymentPolicy()
    gates: Gates = Gates()
    monitoring: Monitoring = Monitoring()
    provisioning: Provisioning = Provisioning()
    calibration: Calibration = Calibration()  # after gates: its check reads them

    @field_validator("lines")
    @classmethod
    def _unique_lines(cls, lines: tuple[Line, ...]) -> tuple[Line, ...]:
        _reject_duplicates([line.name for line in lines], "line", "lines")
        if len(lines) > MAX_LINES:
            raise ValueError(
                f"{len(lines)} lines, at most {MAX_LINES} can deploy: every line is a thing "
                f"group, a CloudFormation resource, and CloudFormation creates at most "
                f"{CFN_MAX_RESOURCES_PER_OPERATION} resources in one stack operation, nested "
                "stacks included (cloudformation-limits.html); split the plant into several "
                "plant files"
            )
        per_stack = [0] * LINE_STACKS
        for line in lines:
            per_stack[line_stack(line.name)] += 1
        if max(per_stack) > MAX_LINES_PER_STACK:
            # Only reachable near MAX_LINES with unevenly hashing names.
            raise ValueError(
                f"{max(per_stack)} line groups fall into one nested stack (at most "
                f"{MAX_LINES_PER_STACK}; CloudFormation allows {CFN_MAX_RESOURCES_PER_STACK} "
                "resources per stack); remove lines or split the plant"
            )
        return lines

    @field_validator("rings")
    @classmethod
    def _rings_cover_fleet(cls, rings: tuple[Ring, ...]) -> tuple[Ring, ...]:
        _reject_duplicates([r.name for r in rings], "ring", "rings")
        total = sum(r.percent for r in rings)
        if not math.isclose(total, 100.0, abs_tol=1e-6):
            raise ValueError(f"ring percents must sum to 100 (they sum to {total:g})")
        return rings

    @field_validator("calibration")
    @classmethod
    def _manual_target_within_gate(
        cls, calibration: Calibration, info: ValidationInfo
    ) -> Calibration:
        gates = info.data.get("gates")
        if gates is not None and calibration.target_manual_rate > gates.max_manual_rate / 2:
            raise ValueError(
                f"target_manual_rate {calibration.target_manual_rate:g} is above half of "
                f"gates.max_manual_rate {gates.max_manual_rate:g}: a model calibrated to it "
                "would fail the rollout's manual ceiling once defects sent to manual and frames "
                "that cannot be judged are counted too"
            )
        return calibration

    # Names derived from the plant: the single place that spells them.

    @property
    def plant_group_name(self) -> str:
        """Thing group for the whole plant (organisation only, no deployment)."""
        return f"lineguard-{self.name}"

    def line_group_name(self, line: str) -> str:
        """Thing group for one line (organisation only, no deployment)."""
        return f"lineguard-{self.name}-line-{line}"

    def ring_group_name(self, ring: str) -> str:
        """Thing group for one ring; the target of that ring's deployment."""
        return f"lineguard-{self.name}-ring-{ring}"

    def thing_group_arn(self, group_name: str) -> str:
        """ARN of a thing group in this plant's account and region."""
        return f"arn:aws:iot:{self.region}:{self.account}:thinggroup/{group_name}"

    def ring_group_arn(self, ring: str) -> str:
        """ARN of a ring's thing group (a deployment's ``targetArn``)."""
        return self.thing_group_arn(self.ring_group_name(ring))

    @property
    def core_policy_name(self) -> str:
        """IoT policy attached to every core device's certificate."""
        return f"lineguard-{self.name}-core-device"

    @property
    def claim_policy_name(self) -> str:
        """IoT policy of the claim certificates that provision this plant's devices."""
        return f"lineguard-{self.name}-provisioning-claim"

    @property
    def role_alias_name(self) -> str:
        """IoT role alias of the token exchange role (Greengrass ``iotRoleAlias``)."""
        return f"lineguard-{self.name}-token-exchange"

    @property
    def provisioning_template_name(self) -> str:
        """Fleet provisioning template that core devices use with their claim certificate."""
        return f"lineguard-{self.name}-core-devices"

    def thing_name(self, serial: str) -> str:
        """Thing name a device with this serial gets when it provisions."""
        return f"lineguard-{self.name}-{serial}"

    @property
    def artifact_bucket_name(self) -> str:
        """The artifact bucket of the plant's account and region (LineGuard-Shared)."""
        return artifact_bucket_name(self.account, self.region)

    @property
    def ring_names(self) -> tuple[str, ...]:
        """Ring names in rollout order."""
        return tuple(r.name for r in self.rings)

    def ring(self, name: str) -> Ring:
        """The ring called ``name``; ``KeyError`` naming the known rings otherwise."""
        for ring in self.rings:
            if ring.name == name:
                return ring
        raise KeyError(
            f"plant {self.name!r} has no ring {name!r} (rings: {', '.join(self.ring_names)})"
        )

    @property
    def station_count(self) -> int:
        """Number of stations over all lines."""
        return sum(len(line.stations) for line in self.lines)

    @property
    def camera_count(self) -> int:
        """Number of cameras over all stations."""
        return sum(s.cameras for line in self.lines for s in line.stations)


class RingRelease(_Frozen):
    """The exact component versions a ring runs, and optional configuration merges."""

    components: Mapping[str, str]
    configuration: Mapping[str, Mapping[str, Any]] = Field(default_factory=dict)
    updated_at: str | None = None

    @field_validator("components")
    @classmethod
    def _components(cls, components: Mapping[str, str]) -> Mapping[str, str]:
        for name, version in components.items():
            if name not in KNOWN_COMPONENTS:
                raise ValueError(
                    f"unknown component {name!r} (known: {', '.join(KNOWN_COMPONENTS)})"
                )
            if not SEMVER.match(version):
                raise ValueError(f"{name}: version {version!r} is not an exact semantic version")
            allowed = AWS_COMPONENTS.get(name)
            if allowed is not None and version not in allowed:
                raise ValueError(
                    f"{name}: version {version!r} is not an allowed pin "
                    f"(allowed: {', '.join(allowed)}; stacks/config.py AWS_COMPONENTS)"
                )
        missing = [c for c in REQUIRED_COMPONENTS if c not in components]
        if missing:
            raise ValueError(f"missing required component(s): {', '.join(missing)}")
        return dict(sorted(components.items()))

    @model_validator(mode="after")
    def _configuration_for_deployed_components(self) -> RingRelease:
        for name, merge in self.configuration.items():
            if name not in self.components:
                raise ValueError(f"configuration for {name!r}, which this ring does not deploy")
            for key in PER_DEVICE_SETTINGS.get(name, ()):
                if key in merge:
                    raise ValueError(
                        f"configuration.{name}.{key}: a per-device setting comes from the "
                        "device's provisioning, not from a ring's release"
                    )
        if NUCLEUS in self.components:
            merge = self.configuration.get(NUCLEUS, {})
            if merge.get(INTERPOLATE_CONFIGURATION) is not True:
                raise ValueError(
                    f"configuration.{NUCLEUS}.{INTERPOLATE_CONFIGURATION} must be true: the "
                    "inspector's accessControl uses {iot:thingName}"
                )
        return self


class Release(_Frozen):
    """What every ring of one plant runs now (``releases/<plant>.json``)."""

    format: Literal["lineguard.release/1"] = RELEASE_FORMAT
    plant: Annotated[str, Field(pattern=PLANT_NAME)]
    rings: Mapping[str, RingRelease] = Field(default_factory=dict)

    def ring(self, name: str) -> RingRelease | None:
        """The ring's release, or ``None`` when the ring has none yet."""
        return self.rings.get(name)

    def with_ring(
        self,
        ring: str,
        components: Mapping[str, str],
        *,
        configuration: Mapping[str, Mapping[str, Any]] | None = None,
        updated_at: str | None = None,
    ) -> Release:
        """A copy of this release with ``ring`` set to ``components`` (validated)."""
        entry = RingRelease.model_validate(
            {
                "components": dict(components),
                "configuration": dict(configuration or {}),
                "updated_at": updated_at,
            }
        )
        rings = dict(self.rings)
        rings[ring] = entry
        return Release(plant=self.plant, rings=rings)

    def to_json(self) -> dict[str, Any]:
        """The release as the JSON document written to ``releases/<plant>.json``."""
        rings: dict[str, Any] = {}
        for name, entry in self.rings.items():
            doc: dict[str, Any] = {"components": dict(entry.components)}
            if entry.configuration:
                doc["configuration"] = {k: dict(v) for k, v in entry.configuration.items()}
            if entry.updated_at:
                doc["updated_at"] = entry.updated_at
            rings[name] = doc
        return {"format": self.format, "plant": self.plant, "rings": rings}


# --------------------------------------------------------------------------- loading


def _field_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _first_error(
    exc: ValidationError, where: Path | str, cls: type[PlantConfigError]
) -> PlantConfigError:
    errors = exc.errors(include_url=False)
    err = errors[0]
    # pydantic appends the function name of validators to the location; drop that noise.
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif err["type"] == "missing":
        message = "required field is missing"
    # A failed element also fails its container (e.g. "lines: too short"): do not count those.
    first = tuple(err["loc"])
    others = [e for e in errors[1:] if tuple(e["loc"]) != first[: len(e["loc"])]]
    more = f" (and {len(others)} more problem(s))" if others else ""
    return cls(where, _field_path(loc), message + more)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlantConfigError(path, "", "plant file not found") from None
    except OSError as exc:
        raise PlantConfigError(path, "", f"cannot read plant file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlantConfigError(path, "", f"not valid YAML{at}: {problem}") from None


def parse_plant(doc: Any, where: Path | str = "<plant>") -> PlantConfig:
    """Validate an already-parsed plant document; errors name ``where`` and the field."""
    if not isinstance(doc, dict):
        raise PlantConfigError(where, "", "must be a YAML mapping of plant fields")
    try:
        plant = PlantConfig.model_validate(doc)
    except ValidationError as exc:
        raise _first_error(exc, where, PlantConfigError) from None
    stem = Path(str(where)).stem
    if str(where).endswith((".yaml", ".yml")) and stem != plant.name:
        raise PlantConfigError(where, "name", f"{plant.name!r} must match the file name {stem!r}")
    return plant


def load_plant(path: Path | str) -> PlantConfig:
    """Read and validate one plant file."""
    path = Path(path)
    return parse_plant(_read_yaml(path), path)


def plant_files(plants_dir: Path | str = PLANTS_DIR) -> dict[str, Path]:
    """Plant name → file, for every ``*.yaml`` in ``plants_dir`` (sorted by name)."""
    plants_dir = Path(plants_dir)
    if not plants_dir.is_dir():
        raise PlantConfigError(plants_dir, "", "plants directory not found")
    files = sorted(plants_dir.glob("*.yaml"))
    return {f.stem: f for f in files}


def load_plants(
    plants_dir: Path | str = PLANTS_DIR, selected: Iterable[str] | str | None = None
) -> tuple[PlantConfig, ...]:
    """Load the selected plants (all by default; a comma-separated string works too)."""
    files = plant_files(plants_dir)
    if isinstance(selected, str):
        selected = [s.strip() for s in selected.split(",") if s.strip()]
    names = list(files) if selected is None else list(dict.fromkeys(selected))
    if not names:
        raise PlantConfigError(plants_dir, "", "no plant files (*.yaml) found")
    unknown = [n for n in names if n not in files]
    if unknown:
        known = ", ".join(files) or "none"
        raise PlantConfigError(plants_dir, "", f"unknown plant {unknown[0]!r} (plants: {known})")
    plants = tuple(load_plant(files[n]) for n in names)
    if selected is None:
        check_thing_name_prefixes(plants, files)
    return plants


def check_thing_name_prefixes(plants: Iterable[PlantConfig], files: Mapping[str, Path]) -> None:
    """Refuse two plants of one account and region whose thing names could collide.

    A device's thing is ``lineguard-<plant>-<serial>`` and serials may hold "-", so with plants
    ``a`` and ``a-b`` the serial ``b-1`` of plant ``a`` would be thing ``lineguard-a-b-1`` —
    a name of plant ``a-b``, inside its policies' and roles' ``lineguard-a-b-*`` patterns.
    """
    by_env: dict[tuple[str, str], list[PlantConfig]] = {}
    for plant in plants:
        by_env.setdefault((plant.account, plant.region), []).append(plant)
    for same_env in by_env.values():
        for plant in same_env:
            for other in same_env:
                if other is not plant and other.name.startswith(f"{plant.name}-"):
                    raise PlantConfigError(
                        files[other.name],
                        "name",
                        f"{other.name!r} starts with {plant.name!r} + '-', and both are in "
                        f"{plant.account}/{plant.region}: their devices' thing names "
                        f"(lineguard-<plant>-<serial>) could collide; rename one",
                    )


# --------------------------------------------------------------------------- releases


def shared_stack_name(account: str, region: str) -> str:
    """``LineGuard-Shared-<account>-<region>``: one per account and region, whatever is selected."""
    return f"LineGuard-Shared-{account}-{region}"


def release_path(plant: str, releases_dir: Path | str = RELEASES_DIR) -> Path:
    """Where the release file of ``plant`` lives."""
    return Path(releases_dir) / f"{plant}.json"


def parse_release(
    doc: Any, where: Path | str = "<release>", plant: PlantConfig | None = None
) -> Release:
    """Validate a parsed release document (and check it against ``plant`` when given)."""
    if not isinstance(doc, dict):
        raise ReleaseError(where, "", "must be a JSON object")
    try:
        release = Release.model_validate(doc)
    except ValidationError as exc:
        raise _first_error(exc, where, ReleaseError) from None
    if plant is not None:
        check_release(release, plant, where)
    return release


def check_release(release: Release, plant: PlantConfig, where: Path | str = "<release>") -> None:
    """Raise :class:`ReleaseError` unless ``release`` belongs to ``plant`` and names its rings."""
    if release.plant != plant.name:
        raise ReleaseError(where, "plant", f"{release.plant!r} is not plant {plant.name!r}")
    for ring in release.rings:
        if ring not in plant.ring_names:
            raise ReleaseError(
                where,
                f"rings.{ring}",
                f"plant {plant.name!r} has no such ring (rings: {', '.join(plant.ring_names)})",
            )


def load_release(path: Path | str, plant: PlantConfig | None = None) -> Release:
    """Read and validate a release file; a missing file is a :class:`ReleaseError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReleaseError(path, "", "release file not found") from None
    except OSError as exc:
        raise ReleaseError(path, "", f"cannot read release file ({exc.strerror})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReleaseError(path, "", f"not valid JSON at line {exc.lineno}: {exc.msg}") from None
    return parse_release(doc, path, plant)


def load_plant_release(plant: PlantConfig, releases_dir: Path | str = RELEASES_DIR) -> Release:
    """Load ``releases/<plant>.json`` and check it against the plant."""
    return load_release(release_path(plant.name, releases_dir), plant)


def write_release(path: Path | str, release: Release) -> Path:
    """Write a release file atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    Release.model_validate(release.to_json())  # never write what we could not read back
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(release.to_json(), indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def initial_release(plant: PlantConfig, components: Mapping[str, str]) -> Release:
    """A release in which every ring of ``plant`` runs ``components``."""
    release = Release(plant=plant.name)
    for ring in plant.ring_names:
        release = release.with_ring(ring, components)
    return release
