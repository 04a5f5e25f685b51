"""The boto3 implementation of :class:`rollout.fleet.FleetApi`.

Clients are created lazily from a session (no AWS work at import or construction). Every AWS
error becomes :class:`rollout.errors.AwsError` naming the service, operation and resource.

Health metrics: the Plant stack's rollout-health rules put every health message that names its
ring into CloudWatch, namespace ``LineGuard/<plant>/rollout`` (``stacks/rollout_metrics.py``,
written through the embedded metric format because IoT metric actions cannot set dimensions):
``Inspections``, ``Rejects``, ``Manual`` (counts of the interval), ``InferenceP99`` (ms) and
``HealthReports`` per (Ring, Version, Line, Station) and per (Ring, Version), Version being the
served model's; with a shadow model ``ShadowFrames`` and the reject confusion
``ShadowRejectBoth``, ``ShadowRejectServedOnly``, ``ShadowRejectShadowOnly`` per
(Ring, ShadowVersion), the shadow's own version, and ``ShadowFrames`` / ``ShadowAgreed`` per
(Ring, Version); with a review station's verdicts ``ReviewedRejects``, ``DefectiveRejects``,
``ReviewedManual``, ``DefectiveManual`` per (Ring, Version), Version being the model that
judged the reviewed parts. :meth:`AwsFleet.decision_counts` finds the strata with ``ListMetrics`` and
sums them with ``GetMetricData``; :meth:`AwsFleet.shadow_counts` and
:meth:`AwsFleet.ring_health` ask for known dimensions. See ``stacks/constructs/rollout_health.py``.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inspector.model_package import MANIFEST_FILE, ModelPackage, ModelPackageError, load_package
from rollout.errors import AwsError, BadInputError
from rollout.fleet import (
    MODEL_COMPONENT,
    CoreDevice,
    DeploymentProgress,
    PublishedModel,
    RingHealth,
    RunningDeployment,
    ShadowCounts,
    StratumCounts,
    registry_version,
    shadow_carrier_version,
)
from rollout.recipe import BuiltModel, build_model, digest_b64, recipe_bytes
from stacks import rollout_metrics as rm
from stacks.rollout_metrics import rollout_namespace

# ring_health: query id → (metric, statistic), per (Ring, Version)
RING_METRICS = {
    "inspections": (rm.INSPECTIONS, "Sum"),
    "rejects": (rm.REJECTS, "Sum"),
    "manual": (rm.MANUAL, "Sum"),
    "p99": (rm.INFERENCE_P99, "Maximum"),
    "reports": (rm.HEALTH_REPORTS, "Sum"),
    "shadow_frames": (rm.SHADOW_FRAMES, "Sum"),
    "shadow_agreed": (rm.SHADOW_AGREED, "Sum"),
    # operators' verdicts on parts the version judged (per judging version, not served)
    "reviewed_rejects": (rm.REVIEWED_REJECTS, "Sum"),
    "defective_rejects": (rm.DEFECTIVE_REJECTS, "Sum"),
    "reviewed_manual": (rm.REVIEWED_MANUAL, "Sum"),
    "defective_manual": (rm.DEFECTIVE_MANUAL, "Sum"),
}
LABEL_QUERIES = ("reviewed_rejects", "defective_rejects", "reviewed_manual", "defective_manual")
STRATUM_METRICS = {"frames": rm.INSPECTIONS, "reject": rm.REJECTS, "manual": rm.MANUAL}
SHADOW_COUNTS = {
    "frames": rm.SHADOW_FRAMES,
    "both": rm.SHADOW_REJECT_BOTH,
    "served_only": rm.SHADOW_REJECT_SERVED_ONLY,
    "shadow_only": rm.SHADOW_REJECT_SHADOW_ONLY,
}
READS: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((metric, rm.RING_VERSION) for metric, _ in RING_METRICS.values()),
    *((metric, rm.STRATUM) for metric in STRATUM_METRICS.values()),
    *((metric, rm.SHADOW) for metric in SHADOW_COUNTS.values()),
)
"""Every (metric, dimension names) this adapter reads; the Plant stack must publish each."""
METRIC_PERIOD_S = 60
MAX_QUERIES = 500
"""GetMetricData: "A single GetMetricData call can include as many as 500 MetricDataQuery
structures" (API reference, ``MetricDataQueries``)."""


def _resource(kwargs: dict[str, Any]) -> str:
    for key in (
        "deploymentId",
        "jobId",
        "ModelPackageName",
        "Key",
        "thingGroupArn",
        "thingGroupName",
        "targetArn",
    ):
        if key in kwargs:
            return f" ({kwargs[key]})"
    return ""


class AwsFleet:
    """The fleet behind Greengrass v2, IoT jobs, CloudWatch, SageMaker and S3."""

    def __init__(
        self,
        *,
        region: str,
        artifact_bucket: str,
        session: Any = None,
        clients: dict[str, Any] | None = None,
        sleep: Any = None,
        deployable_timeout_s: float = 600.0,
    ) -> None:
        """Args: region; artifact bucket (the Shared stack's); a boto3 session or ready clients;
        how to wait (tests pass their own), and how long a new version may take to verify."""
        import time

        self.region = region
        self.artifact_bucket = artifact_bucket
        self._sleep = sleep or time.sleep
        self._deployable_timeout_s = deployable_timeout_s
        self._session = session
        self._clients: dict[str, Any] = dict(clients or {})

    def client(self, service: str) -> Any:
        """The boto3 client of a service, created on first use."""
        if service not in self._clients:
            if self._session is None:
                import boto3

                self._session = boto3.session.Session(region_name=self.region)
            self._clients[service] = self._session.client(service, region_name=self.region)
        return self._clients[service]

    def _call(self, service: str, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client(service), operation)(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise AwsError(
                f"{service}.{operation}{_resource(kwargs)}: {err.get('Code', 'Error')}: "
                f"{err.get('Message', exc)}"
            ) from exc
        except BotoCoreError as exc:
            raise AwsError(f"{service}.{operation}{_resource(kwargs)}: {exc}") from exc

    def _pages(
        self, service: str, operation: str, key: str, token: str = "nextToken", **kwargs: Any
    ) -> Iterator[Any]:
        while True:
            page = self._call(service, operation, **kwargs)
            yield from page.get(key, [])
            nxt = page.get(token)
            if not nxt:
                return
            kwargs[token] = nxt

    # -- publish ------------------------------------------------------------------------------

    def publish_model(self, package: ModelPackage) -> PublishedModel:
        """Build the model component, upload its artifact (with its SHA-256), create the version.

        A version that already exists is checked first: the same artifact digest returns it
        (a resumed promotion), a different one is refused before anything is uploaded, so a
        reused version never overwrites the artifact a released component points at.
        """
        built = build_model(package, self.artifact_bucket)
        meta = {"model": package.manifest.ref, "graph-sha256": package.manifest.sha256}
        return self._publish(built, meta)

    def publish_shadow(self, served_version: str, package: ModelPackage) -> PublishedModel:
        """Publish the shadow carrier: the published ``served_version``'s model package, taken
        from its own artifact (its digest checked against its recipe), with ``package`` under
        ``shadow/``, as version :func:`rollout.fleet.shadow_carrier_version`."""
        try:
            version = shadow_carrier_version(served_version, package.manifest.version)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
        existing = self._component_recipe(served_version)
        if existing is None:
            raise BadInputError(
                f"{MODEL_COMPONENT} {served_version} is not published: the shadow phase needs "
                "the previous model's component to carry the candidate"
            )
        arn, recipe = existing
        artifacts = [
            a
            for m in recipe.get("Manifests", [])
            for a in m.get("Artifacts", [])
            if str(a.get("URI", "")).startswith("s3://")
        ]
        if len(artifacts) != 1:
            raise BadInputError(f"{arn}: expected one s3:// artifact, found {len(artifacts)}")
        uri, digest = artifacts[0]["URI"], artifacts[0].get("Digest")
        bucket, _, key = uri[5:].partition("/")
        body = self._call("s3", "get_object", Bucket=bucket, Key=key)["Body"].read()
        if not digest:
            raise BadInputError(f"{arn}: its artifact has no Digest to check {uri} against")
        if digest_b64(body) != digest:
            raise BadInputError(f"{uri}: its bytes do not match the digest in {arn}'s recipe")
        with tempfile.TemporaryDirectory(prefix="lineguard-served-") as tmp:
            _unpack(body, key, Path(tmp))
            try:
                served = load_package(Path(tmp))
            except ModelPackageError as exc:
                raise BadInputError(f"{uri}: not a model package ({exc})") from None
            built = build_model(served, self.artifact_bucket, shadow=package, version=version)
            meta = {
                "model": served.manifest.ref,
                "graph-sha256": served.manifest.sha256,
                "shadow-model": package.manifest.ref,
                "shadow-graph-sha256": package.manifest.sha256,
            }
        return self._publish(built, meta)

    def _publish(self, built: BuiltModel, metadata: dict[str, str]) -> PublishedModel:
        """Upload a built model component and create its version (see :meth:`publish_model`)."""
        version = built.version
        existing = self._component_recipe(version)
        if existing is not None:
            arn, recipe = existing
            if built.digest not in _artifact_digests(recipe):
                raise BadInputError(
                    f"{MODEL_COMPONENT} {version} already exists with a different artifact; "
                    "a model package version can be published only once (register the model "
                    "again for a new version)"
                )
            self._wait_deployable(arn)  # a resumed publish: the version may still be verifying
            return PublishedModel(MODEL_COMPONENT, version, arn, built.uri, built.digest)
        self._call(
            "s3",
            "put_object",
            Bucket=self.artifact_bucket,
            Key=built.key,
            Body=built.archive,
            ChecksumSHA256=built.digest,
            Metadata=metadata,
        )
        from botocore.exceptions import ClientError

        try:
            response = self.client("greengrassv2").create_component_version(
                inlineRecipe=recipe_bytes(built.recipe)
            )
            arn = response["arn"]
            status = response.get("status", {}).get("componentState", "")
            if status == "FAILED":
                message = response["status"].get("message", "")
                raise AwsError(f"greengrassv2.create_component_version ({arn}): FAILED: {message}")
            if status != "DEPLOYABLE":
                self._wait_deployable(arn)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            if err.get("Code") != "ConflictException":
                raise AwsError(
                    f"greengrassv2.create_component_version ({MODEL_COMPONENT} {version}): "
                    f"{err.get('Code')}: {err.get('Message')}"
                ) from exc
            # Already published (e.g. a resumed promotion): the existing version must match.
            arn = self._existing_component_arn(version, built.digest)
            self._wait_deployable(arn)
        return PublishedModel(MODEL_COMPONENT, version, arn, built.uri, built.digest)

    def _wait_deployable(self, arn: str, poll_s: float = 5.0) -> None:
        """Wait until the new version is DEPLOYABLE: Greengrass verifies it (the artifact and
        its digest) after CreateComponentVersion returns, and a deployment of a version still
        REQUESTED/INITIATED, or FAILED, cannot succeed (API reference, CloudComponentState)."""
        waited = 0.0
        while True:
            status = self._call("greengrassv2", "describe_component", arn=arn).get("status", {})
            state = status.get("componentState", "")
            if state == "DEPLOYABLE":
                return
            if state in ("FAILED", "DEPRECATED"):
                raise AwsError(
                    f"greengrassv2.describe_component ({arn}): {state}: "
                    f"{status.get('message', '')} {status.get('errors', '')}".rstrip()
                )
            if waited >= self._deployable_timeout_s:
                raise AwsError(
                    f"greengrassv2.describe_component ({arn}): still {state} after "
                    f"{waited:.0f} s; not deploying a version Greengrass has not verified"
                )
            self._sleep(poll_s)
            waited += poll_s

    def _component_arn(self, version: str) -> str:
        account = self._call("sts", "get_caller_identity")["Account"]
        return (
            f"arn:aws:greengrass:{self.region}:{account}:components:{MODEL_COMPONENT}"
            f":versions:{version}"
        )

    def _component_recipe(self, version: str) -> tuple[str, dict[str, Any]] | None:
        """The ARN and recipe of a published model component version, or None."""
        from botocore.exceptions import ClientError

        arn = self._component_arn(version)
        try:
            response = self.client("greengrassv2").get_component(arn=arn, recipeOutputFormat="JSON")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            err = exc.response.get("Error", {})
            raise AwsError(
                f"greengrassv2.get_component ({arn}): {err.get('Code')}: {err.get('Message')}"
            ) from exc
        recipe = response["recipe"]
        text = recipe.decode("utf-8") if isinstance(recipe, bytes | bytearray) else str(recipe)
        return arn, json.loads(text)

    def _existing_component_arn(self, version: str, digest: str) -> str:
        existing = self._component_recipe(version)
        if existing is None or digest not in _artifact_digests(existing[1]):
            raise BadInputError(
                f"{MODEL_COMPONENT} {version} already exists with a different artifact; "
                "a model package version can be published only once"
            )
        return existing[0]

    def published_as(self, package: ModelPackage) -> bool | None:
        """Compare the package's component build with the published version's artifact digest
        (the build is deterministic, so the same package gives the same digest)."""
        existing = self._component_recipe(package.manifest.version)
        if existing is None:
            return None
        return build_model(package, self.artifact_bucket).digest in _artifact_digests(existing[1])

    def reject_model_package(self, arn: str, reason: str) -> None:
        """``sagemaker.update_model_package`` to ``Rejected``, the reason as its description."""
        self._call(
            "sagemaker",
            "update_model_package",
            ModelPackageArn=arn,
            ModelApprovalStatus="Rejected",
            ApprovalDescription=reason[:1024],
        )

    # -- deployments --------------------------------------------------------------------------

    def create_deployment(self, request: dict[str, Any]) -> str:
        """``greengrassv2.create_deployment`` with the request from ``deployment_spec``."""
        return str(self._call("greengrassv2", "create_deployment", **request)["deploymentId"])

    def deployment_progress(self, deployment_id: str) -> DeploymentProgress:
        """Greengrass deployment status plus its IoT job's execution summaries by status."""
        dep = self._call("greengrassv2", "get_deployment", deploymentId=deployment_id)
        status = dep.get("deploymentStatus", "ACTIVE")
        job_id = dep.get("iotJobId")
        if not job_id:
            return DeploymentProgress(deployment_id, status, "IN_PROGRESS", {})
        job = self._call("iot", "describe_job", jobId=job_id)["job"]
        # one summary per execution: a thing that left the group and came back has several, and
        # its latest (highest executionNumber) is the one that counts (ListJobExecutionsForJob)
        latest: dict[str, tuple[int, str]] = {}
        for summary in self._pages(
            "iot", "list_job_executions_for_job", "executionSummaries", jobId=job_id
        ):
            execution = summary.get("jobExecutionSummary", {})
            thing = str(summary.get("thingArn", "")).rsplit("/", 1)[-1]
            number = int(execution.get("executionNumber", 0))
            if thing and (thing not in latest or number >= latest[thing][0]):
                latest[thing] = (number, str(execution.get("status", "QUEUED")))
        executions = {thing: state for thing, (_, state) in latest.items()}
        counts: dict[str, int] = {}
        for state in executions.values():
            counts[state] = counts.get(state, 0) + 1
        return DeploymentProgress(
            deployment_id, status, job.get("status", "IN_PROGRESS"), counts, executions
        )

    def ring_deployment(self, target_arn: str) -> RunningDeployment | None:
        """``list_deployments(targetArn, historyFilter=LATEST_ONLY)`` then ``get_deployment``:
        "The response contains a list with the latest deployment for the target"
        (check-deployment-status); a new deployment to a target replaces the previous one."""
        latest = list(
            self._pages(
                "greengrassv2",
                "list_deployments",
                "deployments",
                targetArn=target_arn,
                historyFilter="LATEST_ONLY",
            )
        )
        if not latest:
            return None
        deployment_id = str(latest[0]["deploymentId"])
        dep = self._call("greengrassv2", "get_deployment", deploymentId=deployment_id)
        components: dict[str, str] = {}
        configuration: dict[str, dict[str, Any]] = {}
        for name, spec in (dep.get("components") or {}).items():
            components[name] = str(spec["componentVersion"])
            merge = (spec.get("configurationUpdate") or {}).get("merge")
            if merge:
                try:
                    configuration[name] = dict(json.loads(merge))
                except (ValueError, TypeError) as exc:
                    raise AwsError(
                        f"greengrassv2.get_deployment ({deployment_id}): {name}'s merge is not "
                        f"a JSON object ({exc})"
                    ) from None
        return RunningDeployment(deployment_id, components, configuration)

    def ring_members(self, target_arn: str) -> list[str]:
        """``iot.list_things_in_thing_group`` of the ring's group (its direct members)."""
        group = target_arn.rsplit("/", 1)[-1]
        return [
            str(name)
            for name in self._pages(
                "iot", "list_things_in_thing_group", "things", thingGroupName=group
            )
        ]

    def core_devices(self, target_arn: str) -> list[CoreDevice]:
        """``list_core_devices`` of the ring's thing group: "only core devices that have
        successfully deployed a deployment that targets the thing group. When you remove a core
        device from a thing group, the list continues to include that core device" (API
        reference, ListCoreDevices ``thingGroupArn``) — so not the ring's membership."""
        return [
            CoreDevice(d["coreDeviceThingName"], d.get("status", "UNKNOWN"))
            for d in self._pages(
                "greengrassv2", "list_core_devices", "coreDevices", thingGroupArn=target_arn
            )
        ]

    def installed_components(self, device: str) -> dict[str, str]:
        """``list_installed_components(topologyFilter=ALL)`` of one core device: what it
        reported last (core devices report after a deployment; API reference,
        ListInstalledComponents, whose default ``ROOT`` would omit dependencies)."""
        return {
            str(c["componentName"]): str(c["componentVersion"])
            for c in self._pages(
                "greengrassv2",
                "list_installed_components",
                "installedComponents",
                coreDeviceThingName=device,
                topologyFilter="ALL",
            )
        }

    def effective_deployments(self, device: str) -> list[dict[str, Any]]:
        """``list_effective_deployments`` of one core device."""
        return list(
            self._pages(
                "greengrassv2",
                "list_effective_deployments",
                "effectiveDeployments",
                coreDeviceThingName=device,
            )
        )

    # -- health -------------------------------------------------------------------------------

    def _metric_data(
        self, queries: Sequence[dict[str, Any]], start: float, end: float
    ) -> dict[str, list[float]]:
        """``GetMetricData`` of ``queries`` over ``[start, end)`` (StartTime inclusive, EndTime
        exclusive: API reference), at most :data:`MAX_QUERIES` per call, each call paged by
        ``NextToken``; query id → every value returned."""
        values: dict[str, list[float]] = {q["Id"]: [] for q in queries}
        for i in range(0, len(queries), MAX_QUERIES):
            for result in self._pages(
                "cloudwatch",
                "get_metric_data",
                "MetricDataResults",
                token="NextToken",
                MetricDataQueries=list(queries[i : i + MAX_QUERIES]),
                StartTime=datetime.fromtimestamp(start, UTC),
                EndTime=datetime.fromtimestamp(end, UTC),
            ):
                values[result["Id"]].extend(float(v) for v in result.get("Values", []))
        return values

    def _series(
        self,
        namespace: str,
        metric: str,
        names: tuple[str, ...],
        values: dict[str, str] | None = None,
    ) -> list[dict[str, str]]:
        """``ListMetrics`` (paged by ``NextToken``): the dimension values of every series of
        ``metric`` whose dimensions are exactly ``names`` (those in ``values`` fixed).

        ListMetrics "doesn't return information about metrics if those metrics haven't reported
        data in the past two weeks", and "after you create a metric, allow up to 15 minutes for
        the metric to appear" (API reference, ListMetrics): a window must lie within the last
        two weeks, and a series that began in the last quarter hour may be missing.
        """
        seen: dict[tuple[str, ...], dict[str, str]] = {}
        fixed = values or {}
        for metric_doc in self._pages(
            "cloudwatch",
            "list_metrics",
            "Metrics",
            token="NextToken",
            Namespace=namespace,
            MetricName=metric,
            Dimensions=[
                {"Name": name, "Value": fixed[name]} if name in fixed else {"Name": name}
                for name in names
            ],
        ):
            dims = {str(d["Name"]): str(d["Value"]) for d in metric_doc.get("Dimensions", [])}
            if set(dims) == set(names):
                seen.setdefault(tuple(dims[n] for n in names), {n: dims[n] for n in names})
        return [seen[key] for key in sorted(seen)]

    def decision_counts(
        self, plant: str, start: float, end: float, ring: str | None = None
    ) -> list[StratumCounts]:
        """The plant's (ring, line, station, served version) strata (``ring``'s only, when
        given) that judged frames in ``[start, end)``: the series of ``Inspections`` per (Ring, Version, Line, Station) from
        ``ListMetrics``, then the ``Sum`` of ``Inspections``, ``Rejects`` and ``Manual`` of each
        (per minute, added up) with ``GetMetricData``.

        ListMetrics lists only series with data in the past two weeks, and a series can take up
        to 15 minutes to be listed (API reference, ListMetrics; :meth:`_series`): the window
        must be recent, and a stratum that began reporting minutes ago may be missing.
        """
        namespace = rollout_namespace(plant)
        strata = self._series(
            namespace, rm.INSPECTIONS, rm.STRATUM, {rm.RING: ring} if ring is not None else None
        )
        queries = [
            _query(f"s{i}_{key}", namespace, metric, dims, "Sum")
            for i, dims in enumerate(strata)
            for key, metric in STRATUM_METRICS.items()
        ]
        values = self._metric_data(queries, start, end)
        counts = []
        for i, dims in enumerate(strata):
            total = {key: round(sum(values[f"s{i}_{key}"])) for key in STRATUM_METRICS}
            if total["frames"] > 0:
                counts.append(
                    StratumCounts(
                        ring=dims[rm.RING],
                        line=dims[rm.LINE],
                        station=dims[rm.STATION],
                        version=dims[rm.VERSION],
                        frames=total["frames"],
                        reject=total["reject"],
                        manual=total["manual"],
                    )
                )
        return counts

    def shadow_counts(
        self, plant: str, ring: str, version: str, start: float, end: float
    ) -> ShadowCounts:
        """The ``Sum`` over ``[start, end)`` of the shadow series of ``Ring=ring``,
        ``ShadowVersion=version``: frames the shadow judged and its reject confusion."""
        namespace = rollout_namespace(plant)
        dims = {rm.RING: ring, rm.SHADOW_VERSION: version}
        queries = [
            _query(key, namespace, metric, dims, "Sum") for key, metric in SHADOW_COUNTS.items()
        ]
        values = self._metric_data(queries, start, end)
        return ShadowCounts(**{key: round(sum(values[key])) for key in SHADOW_COUNTS})

    def ring_health(
        self, plant: str, ring: str, target_arn: str, start: float, end: float, model_version: str
    ) -> RingHealth:
        """The ring's health: core device status, and its devices' health metrics on the version.

        ``healthy`` is the ring's HEALTHY core devices (the controller caps it at the devices the
        deployment reached). The figures are the (Ring, Version) series: the ring's own devices
        serving ``model_version``. Latency: per minute the worst device's p99, then the 99th
        percentile of those minutes. ``reporting`` assumes one health message per device per
        minute. ``shadow_agreement``: the frame-weighted raw agreement of whatever shadow model
        those devices ran (per shadow version, with the reject confusion: :meth:`shadow_counts`).
        """
        devices = self.core_devices(target_arn)
        namespace = rollout_namespace(plant)
        dims = {rm.RING: ring, rm.VERSION: model_version}
        queries = [
            _query(query_id, namespace, metric, dims, stat)
            for query_id, (metric, stat) in RING_METRICS.items()
        ]
        values = self._metric_data(queries, start, end)
        # intervals without frames report p99 0: they say nothing about latency
        lat = sorted(v for v in values["p99"] if v > 0)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None
        rejects, manual = round(sum(values["rejects"])), round(sum(values["manual"]))
        inspections = round(sum(values["inspections"]))
        shadow_frames = sum(values["shadow_frames"])
        agreement = sum(values["shadow_agreed"]) / shadow_frames if shadow_frames else None
        interval = max(1.0, end - start)
        return RingHealth(
            devices=len(devices),
            healthy=sum(1 for d in devices if d.status == "HEALTHY"),
            healthy_devices=tuple(sorted(d.name for d in devices if d.status == "HEALTHY")),
            reporting=min(len(devices), round(sum(values["reports"]) * 60.0 / interval)),
            decisions={
                "pass": max(0, inspections - rejects - manual),
                "reject": rejects,
                "manual": manual,
            },
            latency_p99_ms=p99,
            shadow_agreement=agreement,
            labels={key: round(sum(values[key])) for key in LABEL_QUERIES},
        )

    # -- model package ------------------------------------------------------------------------

    def fetch_model_package(self, arn: str, workdir: Path) -> Path:
        """Download an Approved model package's artifact (tar.gz or zip) and unpack it."""
        desc = self._call("sagemaker", "describe_model_package", ModelPackageName=arn)
        number = desc.get("ModelPackageVersion")
        if not isinstance(number, int):
            raise BadInputError(f"{arn}: not a versioned model package (no ModelPackageVersion)")
        approval = desc.get("ModelApprovalStatus")
        if approval != "Approved":
            raise BadInputError(f"{arn}: model package is {approval}, not Approved")
        containers = desc.get("InferenceSpecification", {}).get("Containers", [])
        url = next((c["ModelDataUrl"] for c in containers if c.get("ModelDataUrl")), None)
        if not url or not url.startswith("s3://"):
            raise BadInputError(f"{arn}: no s3:// ModelDataUrl in InferenceSpecification")
        bucket, _, key = url[5:].partition("/")
        body = self._call("s3", "get_object", Bucket=bucket, Key=key)["Body"].read()
        target = Path(workdir) / "model-package"
        target.mkdir(parents=True, exist_ok=True)
        _unpack(body, key, target)
        # the shallowest manifest is the kept package; training's candidates/ sit below it
        roots = sorted((p.parent for p in target.rglob(MANIFEST_FILE)), key=lambda p: len(p.parts))
        if not roots:
            raise BadInputError(f"{url}: no {MANIFEST_FILE} in the model artifact")
        root = roots[0]
        trained = load_package(root)  # validate (manifest, graph sha256) before anything ships
        set_manifest_version(root, registry_version(trained.manifest.version, number))
        load_package(root)
        return root


def _query(
    query_id: str, namespace: str, metric: str, dims: dict[str, str], stat: str
) -> dict[str, Any]:
    """One ``MetricDataQuery`` of a metric with its dimensions, per minute."""
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
            },
            "Period": METRIC_PERIOD_S,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def set_manifest_version(root: Path, version: str) -> None:
    """Rewrite the version in a package's manifest (the graph and its sha256 stay as they are)."""
    path = Path(root) / MANIFEST_FILE
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["version"] = version
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _artifact_digests(recipe: dict[str, Any]) -> list[str]:
    return [
        str(a.get("Digest"))
        for m in recipe.get("Manifests", [])
        for a in m.get("Artifacts", [])
        if a.get("Digest")
    ]


def _unpack(body: bytes, name: str, target: Path) -> None:
    if name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            for member in archive.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise BadInputError(f"{name}: unsafe path {member!r} in the archive")
            archive.extractall(target)
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as archive:
            archive.extractall(target, filter="data")
    except tarfile.TarError as exc:
        raise BadInputError(f"{name}: not a tar.gz or zip model artifact ({exc})") from None
