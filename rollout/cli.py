"""``python -m rollout``: promote a model package ring by ring, show status, roll back.

Exit codes: 0 done (or nothing to do), 1 a gate failed and every touched ring was rolled back,
2 bad input (plant, release, model package, arguments, state), 3 AWS error, 4 a ring's gates
could not decide within its bake and extensions: the promotion waits for a person (promote again
to bake longer, or roll back).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inspector.model_package import ModelPackageError, load_package
from rollout.controller import Controller, Report
from rollout.errors import AwsError, BadInputError, RolloutError, StateError
from rollout.fleet import FleetApi, WallClock
from rollout.simulator import SCENARIOS, FleetSimulator, simulated_fleet
from rollout.state import S3StateStore, StateStore
from stacks.config import (
    PLANTS_DIR,
    RELEASES_DIR,
    PlantConfig,
    PlantConfigError,
    load_plant_release,
    load_plants,
)
from stacks.release_store import (
    RELEASES_PREFIX,
    ReleaseStoreError,
    download_releases,
    upload_release,
)

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_AWS, EXIT_INCONCLUSIVE = 0, 1, 2, 3, 4
STATE_DIR = Path(".rollout-state")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rollout",
        description="Promote a model package through a plant's rings with quality gates and "
        "automatic rollback.",
        epilog="Exit codes: 0 ok, 1 a gate failed (every touched ring rolled back), "
        "2 bad input, 3 AWS error. See docs/rollout.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plant", required=True, help="plant name (plants/<plant>.yaml)")
    common.add_argument("--plants-dir", type=Path, default=PLANTS_DIR, help="default: plants")
    common.add_argument(
        "--releases-dir",
        type=Path,
        default=RELEASES_DIR,
        help="where releases/<plant>.json is read and rewritten (default: releases)",
    )
    common.add_argument(
        "--releases-bucket",
        help="read and write the release at s3://BUCKET/rollout/releases/<plant>.json, the "
        "release `cdk deploy -c releases_dir=s3://BUCKET/rollout/releases/` synthesises "
        "(--releases-dir is then the bootstrap when S3 has none yet); against AWS the default "
        "is --artifact-bucket",
    )
    common.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR,
        help="controller state, for resuming (default: .rollout-state)",
    )
    common.add_argument(
        "--state-bucket",
        help="keep the controller state in s3://BUCKET/rollout/state/<plant>.json (conditional "
        "writes: one controller per plant at a time); against AWS the default is "
        "--artifact-bucket",
    )
    common.add_argument("--json", action="store_true", help="print the report as JSON")
    aws = argparse.ArgumentParser(add_help=False)
    aws.add_argument(
        "--artifact-bucket", help="the Shared stack's artifact bucket (needed against AWS)"
    )
    aws.add_argument(
        "--poll-seconds", type=float, default=60.0, help="deployment poll interval (default 60)"
    )
    sim = argparse.ArgumentParser(add_help=False)
    sim.add_argument(
        "--devices", type=int, help="simulated devices (default: the plant's expected_devices)"
    )
    sim.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")

    promote = sub.add_parser(
        "promote",
        parents=[common, aws, sim],
        help="publish a model package and roll it out ring by ring",
        description="Publish the model package as com.lineguard.Model <version> and roll it "
        "out ring by ring; a failed gate rolls every touched ring back.",
    )
    promote.add_argument(
        "--model-package",
        required=True,
        help="SageMaker model package ARN (must be Approved) or a model package directory",
    )
    promote.add_argument(
        "--dry-run", action="store_true", help="print the deployments; publish and deploy nothing"
    )
    promote.add_argument(
        "--stop-after-ring",
        metavar="RING",
        help="pause once this ring passed its gates; promote again to continue",
    )
    promote.add_argument(
        "--simulate",
        choices=sorted(SCENARIOS),
        help="run against the fleet simulator; the new model behaves as the scenario says",
    )
    sub.add_parser(
        "status",
        parents=[common],
        help="what every ring runs and the last promotion's state",
        description="Print the release of every ring and the last promotion's state.",
    )
    rollback = sub.add_parser(
        "rollback",
        parents=[common, aws, sim],
        help="roll the last promotion back on every ring it touched",
        description="Deploy the release the last promotion started from to every ring it touched.",
    )
    rollback.add_argument("--simulate", action="store_true", help="run against the fleet simulator")
    start = sub.add_parser(
        "start-promotion",
        help="CI: start the CodeBuild promotion for one plant and follow it",
        description="Start a build of the Shared stack's promotion project (MODEL_PACKAGE_ARN "
        "and PLANTS overridden) and follow its phases; the promotion runs in CodeBuild, so "
        "leaving early stops nothing. Exit 0 when it succeeded or is still running, 1 when it "
        "ended otherwise (a gate failed: every touched ring rolled back), 3 on an AWS error.",
    )
    start.add_argument("--plant", required=True, help="plant name (plants/<plant>.yaml)")
    start.add_argument(
        "--model-package", required=True, help="approved SageMaker model package ARN"
    )
    start.add_argument("--project", required=True, help="the promotion CodeBuild project's name")
    start.add_argument("--region", required=True, help="the project's region")
    start.add_argument(
        "--follow-minutes",
        type=float,
        default=50.0,
        help="follow the build this long, within the CI session (default 50; 0: start only)",
    )
    start.add_argument("--poll-seconds", type=float, default=30.0, help="default 30")
    return parser


def _plant(args: argparse.Namespace) -> PlantConfig:
    return load_plants(args.plants_dir, [args.plant])[0]


def _emit(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_report(report: Report, args: argparse.Namespace, extra: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({**report.to_json(), **extra}, indent=2, default=str))
        return
    print(f"{report.status}: {report.message}")
    for gate in report.failed:
        print(f"  {gate.line()}")
    for key, value in extra.items():
        print(f"  {key}: {value}")


def _save_report(report: Report, state_dir: Path, plant: str) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"{plant}.report.json"
    path.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n", encoding="utf-8")


def _store(plant: PlantConfig, args: argparse.Namespace) -> StateStore | S3StateStore:
    """Where the controller keeps its state: the S3 bucket if given (against AWS, by default the
    artifact bucket, where the CodeBuild promotion keeps it: one lease for every controller of
    the plant), else the directory."""
    if (
        not args.state_bucket
        and not getattr(args, "simulate", None)
        and not getattr(args, "dry_run", False)
        and getattr(args, "artifact_bucket", None)
    ):
        args.state_bucket = args.artifact_bucket
    if not args.state_bucket:
        return StateStore(args.state_dir, plant.name)
    if getattr(args, "simulate", None):
        raise BadInputError("--state-bucket is for AWS; the simulator keeps its state locally")
    import boto3

    return S3StateStore(boto3.client("s3", region_name=plant.region), args.state_bucket, plant.name)


def _aws_fleet(plant: PlantConfig, args: argparse.Namespace, publish: bool = True) -> FleetApi:
    from rollout.aws import AwsFleet

    if publish and not args.artifact_bucket:
        raise BadInputError("--artifact-bucket is required against AWS (or use --simulate)")
    return AwsFleet(region=plant.region, artifact_bucket=args.artifact_bucket or "")


def _promote(args: argparse.Namespace) -> int:
    plant = _plant(args)
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lineguard-package-") as workdir:
        source = str(args.model_package)
        fleet: FleetApi | None = None
        if source.startswith("arn:"):
            if args.simulate:
                raise BadInputError("--simulate needs a model package directory, not an ARN")
            fleet = _aws_fleet(plant, args)
            root = fleet.fetch_model_package(source, Path(workdir))
        else:
            root = Path(source)
        package = load_package(root)
        _emit(f"model package {package.manifest.ref} ({root})")
        clock: Any = WallClock()
        sim: FleetSimulator | None = None
        if args.simulate:
            sim = _simulator(plant, args, package.manifest.version)
            fleet, clock = sim, sim.clock
            sizes = ", ".join(
                f"{r} {len(n)}" for r, n in zip(plant.ring_names, sim.targets.values(), strict=True)
            )
            _emit(
                f"simulated fleet: {sum(len(n) for n in sim.targets.values())} devices ({sizes}), "
                f"scenario {args.simulate}, seed {args.seed}"
            )
        elif fleet is None:
            fleet = _aws_fleet(plant, args) if not args.dry_run else _NoFleet()
        controller = Controller(
            plant=plant,
            fleet=fleet,
            clock=clock,
            releases_dir=args.releases_dir,
            store=_store(plant, args),
            release_sink=getattr(args, "release_sink", None),
            log=_emit,
            poll_s=args.poll_seconds,
        )
        started = time.perf_counter()
        t0 = clock.now()
        if sim is not None and not args.dry_run:
            _persist_simulator(controller, sim)
        report = controller.promote(
            package,
            dry_run=args.dry_run,
            stop_after=args.stop_after_ring,
            model_package_arn=source if source.startswith("arn:") else None,
        )
        if sim is not None:
            extra["simulated_hours"] = round((clock.now() - t0) / 3600, 2)
            extra["wall_seconds"] = round(time.perf_counter() - started, 3)
    if args.dry_run:
        extra["requests"] = {r: v["request"] for r, v in report.rings.items()}
        if not args.json:
            print(json.dumps(extra.pop("requests"), indent=2))
    else:
        _save_report(report, args.state_dir, plant.name)
    _print_report(report, args, extra)
    if report.status == "inconclusive":
        return EXIT_INCONCLUSIVE
    return EXIT_OK if report.ok else EXIT_GATE_FAILED


def _sim_path(args: argparse.Namespace, plant: str) -> Path:
    return Path(args.state_dir) / f"{plant}.simulator.pickle"


def _simulator(plant: PlantConfig, args: argparse.Namespace, version: str) -> FleetSimulator:
    """The simulated fleet: the one a paused or killed run left behind, or a new one."""
    path = _sim_path(args, plant.name)
    state = StateStore(args.state_dir, plant.name).load()
    if path.is_file() and state and state.get("status") in ("in_progress", "rolling_back"):
        with path.open("rb") as handle:
            sim = pickle.load(handle)  # written by this CLI into the state directory
        if isinstance(sim, FleetSimulator):
            _emit(f"resuming the simulated fleet from {path}")
            return sim
    release = load_plant_release(plant, args.releases_dir)
    return simulated_fleet(
        plant,
        release,
        new_version=version,
        scenario=args.simulate,
        devices=args.devices,
        seed=args.seed,
    )


def _persist_simulator(controller: Controller, sim: FleetSimulator) -> None:
    """Save the simulated fleet with every state checkpoint, so a killed run can resume."""
    store = controller.store
    assert isinstance(store, StateStore), "the simulator runs with a local state directory"
    path = store.path.with_name(store.path.stem + ".simulator.pickle")
    save = store.save

    def save_both(doc: dict[str, Any]) -> None:
        save(doc)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            pickle.dump(sim, handle)
        tmp.replace(path)

    store.save = save_both  # type: ignore[method-assign]


class _NoFleet:
    """Stands in for AWS in ``--dry-run`` without ``--simulate``: any call is a bug."""

    def __getattr__(self, name: str) -> Any:
        raise RolloutError(f"dry run must not call the fleet ({name})")


def _rollback(args: argparse.Namespace) -> int:
    plant = _plant(args)
    clock: Any = WallClock()
    fleet: FleetApi
    sim: FleetSimulator | None = None
    if args.simulate:
        path = _sim_path(args, plant.name)
        if path.is_file():
            with path.open("rb") as handle:
                sim = pickle.load(handle)  # written by this CLI into the state directory
            _emit(f"using the simulated fleet from {path}")
        else:
            state = StateStore(args.state_dir, plant.name).load()
            release = load_plant_release(plant, args.releases_dir)
            version = state["model_version"] if state else "0.0.0"
            sim = simulated_fleet(
                plant, release, new_version=version, devices=args.devices, seed=args.seed
            )
            if state:  # the previous release's versions exist in the simulated Greengrass too
                for entry in state["previous"]["rings"].values():
                    sim.known_versions |= set(entry["components"].items())
        assert sim is not None
        fleet, clock = sim, sim.clock
    else:
        fleet = _aws_fleet(plant, args, publish=False)
    controller = Controller(
        plant=plant,
        fleet=fleet,
        clock=clock,
        releases_dir=args.releases_dir,
        store=_store(plant, args),
        release_sink=getattr(args, "release_sink", None),
        log=_emit,
        poll_s=args.poll_seconds,
    )
    if sim is not None:
        _persist_simulator(controller, sim)
    report = controller.rollback()
    _print_report(report, args, {})
    return EXIT_OK if report.ok else EXIT_GATE_FAILED


def _status(args: argparse.Namespace) -> int:
    plant = _plant(args)
    controller = Controller(
        plant=plant,
        fleet=_NoFleet(),  # type: ignore[arg-type]
        clock=WallClock(),
        releases_dir=args.releases_dir,
        store=_store(plant, args),
        release_sink=getattr(args, "release_sink", None),
        log=_emit,
    )
    status = controller.status()
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return EXIT_OK
    print(f"plant {plant.name}")
    for ring in plant.ring_names:
        entry = status["release"]["rings"].get(ring)
        versions = ", ".join(f"{k} {v}" for k, v in (entry or {}).get("components", {}).items())
        print(f"  {ring}: {versions or '(no release)'}")
    promotion = status["promotion"]
    if promotion:
        print(
            f"last promotion: {promotion['model_version']} {promotion['status']} "
            f"(started {promotion.get('started_at')})"
        )
        for ring, rs in promotion.get("rings", {}).items():
            print(f"  {ring}: {rs.get('phase')}")
        for gate in promotion.get("failed_gates", []):
            print(f"  FAIL {gate['ring']}: {gate['gate']}: {gate['detail']}")
    else:
        print("no promotion recorded")
    return EXIT_OK


def _start_promotion(args: argparse.Namespace) -> int:
    import boto3

    from rollout.ci import follow, start_promotion

    if not args.model_package.startswith("arn:"):
        raise BadInputError(f"--model-package {args.model_package!r}: not a model package ARN")
    codebuild = boto3.client("codebuild", region_name=args.region)
    build = start_promotion(
        codebuild, args.project, model_package_arn=args.model_package, plant=args.plant
    )
    _emit(f"started {build} (promotion of {args.model_package} on plant {args.plant})")
    followed = follow(
        codebuild, build, for_s=60.0 * args.follow_minutes, poll_s=args.poll_seconds, log=_emit
    )
    if followed.status == "SUCCEEDED":
        print(f"promotion build {build} succeeded")
        return EXIT_OK
    if followed.status == "IN_PROGRESS":
        print(
            f"promotion build {build} still running ({followed.phase.lower()}); it goes on in "
            f"CodeBuild: aws codebuild batch-get-builds --ids {build}"
        )
        return EXIT_OK
    print(f"promotion build {build} ended {followed.status}: see its log in CodeBuild")
    return EXIT_GATE_FAILED


@contextlib.contextmanager
def _releases_from_s3(args: argparse.Namespace) -> Iterator[None]:
    """With ``--releases-bucket``: the plant's release comes from S3 (the repository's copy as
    the bootstrap) and every rewrite goes back to S3 at once."""
    bucket = getattr(args, "releases_bucket", None)
    if (
        not bucket
        and not getattr(args, "simulate", None)
        and getattr(args, "artifact_bucket", None)
    ):
        # against AWS the release lives beside the artifacts unless told otherwise: a local
        # promote that kept it only in the working copy would be reverted by the next deploy
        bucket = args.releases_bucket = args.artifact_bucket
    if not bucket:
        yield
        return
    import boto3

    plant = _plant(args)
    s3 = boto3.client("s3", region_name=plant.region)
    with tempfile.TemporaryDirectory(prefix="lineguard-releases-") as tmp:
        url = f"s3://{bucket}/{RELEASES_PREFIX}"
        args.releases_dir = download_releases(s3, url, Path(tmp), fallback=args.releases_dir)
        _emit(f"release of {plant.name} from {url} (bootstrap: the repository's copy)")
        args.release_sink = lambda path: _emit(f"wrote {upload_release(s3, bucket, path)}")
        yield


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = _parser().parse_args(argv)
    commands = {
        "promote": _promote,
        "status": _status,
        "rollback": _rollback,
        "start-promotion": _start_promotion,
    }
    try:
        with _releases_from_s3(args):
            return commands[args.command](args)
    except (AwsError, ReleaseStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_AWS
    except (BadInputError, StateError, PlantConfigError, ModelPackageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RolloutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
