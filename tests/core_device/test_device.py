"""The built components on a local core device, as the nucleus runs them.

Real parts only: the components as ``edge_component/build.py`` builds them (device wheels
included: the install step really creates the venv), their recipes resolved with the nucleus'
rules, the unmodified device SDK over the event-stream IPC socket, the nucleus' accessControl
rules, its spooler, and mosquitto with client certificates standing for IoT Core with the plant's
AckRule behind it. Each test reproduces one defect of a device that trusted a fake nucleus.
"""

from __future__ import annotations

import json
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core_device.iot import Spooler
from core_device.kernel import CoreDevice
from core_device.lifecycle import State
from core_device.local import Identity, LocalCloud, start_device
from stacks.components import (
    CODE_COMPONENTS,
    DEVICE_REQUIREMENTS,
    PLACEHOLDER_BUCKET,
    REPO,
    component_build_module,
)
from tests.support.tiny_model import build_tiny_package, image_bytes, part_image, tiny_onnx

pytestmark = pytest.mark.slow

PLANT = "demo"
INSPECTOR, MODEL = "com.lineguard.Inspector", "com.lineguard.Model"
RESULTS_TOPIC = "lineguard/demo/line-1/press-out/{thing}/results"


@pytest.fixture(scope="session")
def device_components(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The code components built for real (device wheels from the repository's wheel cache, as
    ``make component`` fills it) and Model versions 1.0.0, 1.1.0 and a corrupt 1.2.0."""
    build = component_build_module()
    root = tmp_path_factory.mktemp("device-components")
    out = root / "components"
    specs = build.load_specs(bucket=PLACEHOLDER_BUCKET)
    for spec in specs:
        if spec.name in CODE_COMPONENTS:
            build.build_component(
                spec,
                out,
                requirements=DEVICE_REQUIREMENTS,
                wheel_cache=REPO / "build" / "wheel-cache",
                log=lambda _line: None,
            )
    (model_spec,) = [s for s in specs if s.name == MODEL]
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        package = build_tiny_package(root / f"model-{version}", version=version)
        build.build_component(
            model_spec,
            out,
            requirements=DEVICE_REQUIREMENTS,
            wheel_cache=REPO / "build" / "wheel-cache",
            model_package=package.root,
            log=lambda _line: None,
        )
    # 1.2.0 ships a graph that is not the one its manifest's sha256 names
    bad = out / MODEL / "1.2.0" / "model.zip"
    with zipfile.ZipFile(bad) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["model.onnx"] = tiny_onnx(32, 3, dynamic_batch=False)
    with zipfile.ZipFile(bad, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out


@pytest.fixture
def short_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cdv", dir="/tmp") as path:
        Path(path).chmod(0o755)  # mosquitto drops root and must reach its certificates
        yield Path(path)


def deployment(
    frames: Path,
    *,
    model: str = "1.0.0",
    interpolate: bool = True,
    inspector: dict[str, object] | None = None,
) -> dict[str, object]:
    """A ring deployment as the plant's release makes it (Nucleus + ShadowManager + ours)."""
    components: dict[str, object] = {
        "aws.greengrass.ShadowManager": {"componentVersion": "2.3.12"},
        INSPECTOR: {
            "componentVersion": "1.0.0",
            "configurationUpdate": {
                "merge": json.dumps(
                    {
                        "imagesDir": str(frames),
                        "heartbeatIntervalS": 0.5,
                        "ackTimeoutS": 3,
                        **(inspector or {}),
                    }
                )
            },
        },
        MODEL: {"componentVersion": model},
    }
    nucleus: dict[str, object] = {"componentVersion": "2.16.1"}
    if interpolate:
        nucleus["configurationUpdate"] = {
            "merge": json.dumps({"interpolateComponentConfiguration": True})
        }
    components["aws.greengrass.Nucleus"] = nucleus
    return {
        "components": components,
        "deploymentPolicies": {
            "failureHandlingPolicy": "ROLLBACK",
            "componentUpdatePolicy": {"action": "NOTIFY_COMPONENTS", "timeoutInSeconds": 30},
        },
    }


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, device: CoreDevice) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{device.log(INSPECTOR)[-4000:]}")
        time.sleep(0.1)


def write_frames(frames: Path, names: list[str], delta: float = 0.0) -> None:
    for name in names:
        tmp = frames / f".{name}.part"
        tmp.write_bytes(image_bytes(part_image(delta)))
        tmp.rename(frames / f"{name}.png")


THING = "lineguard-demo-D1"


def new_device(
    short_root: Path, components: Path, plant: LocalCloud, spooler: Spooler | None = None
) -> tuple[Path, CoreDevice]:
    """D1 at press-out with its identity synced, and the folder its inspector watches."""
    frames = short_root / "frames"
    frames.mkdir(exist_ok=True)
    device = start_device(short_root / "d1", THING, Identity(PLANT, "line-1", "press-out"),
                          components_dir=components, cloud=plant, spooler=spooler)  # fmt: skip
    return frames, device


@pytest.fixture
def plant(short_root: Path) -> Iterator[LocalCloud]:
    cloud = LocalCloud(PLANT, ["lineguard-demo-D1", "lineguard-demo-D2"], short_root / "cloud")
    cloud.start()
    yield cloud
    cloud.stop()


def test_inspector_judges_with_its_identity_and_every_result_is_acknowledged(
    device_components: Path, plant: LocalCloud, short_root: Path
) -> None:
    thing = THING
    frames, device = new_device(short_root, device_components, plant)
    try:
        # a ring's deployment names the ring (stacks/deployment_spec.py); health carries it
        result = device.deploy(
            deployment(frames, inspector={"ring": "canary", "healthIntervalS": 1})
        )
        assert result.status == "SUCCESSFUL", result.message
        write_frames(frames, [f"p{i}" for i in range(6)])
        wait_until("6 results upstream", lambda: len(plant.upstream.seqs(thing)) == 6, 60,
                   device)  # fmt: skip
        stored = [r for r in plant.upstream.results if r["device"] == thing]
        # identity from the shadow, not from any configuration
        assert {(r["plant"], r["line"], r["station"]) for r in stored} == {
            (PLANT, "line-1", "press-out")
        }
        assert plant.acknowledger is not None
        wait_until("acknowledgements", lambda: plant.acknowledger.acknowledged >= 1, 10, device)
        wait_until("a health message", lambda: bool(plant.upstream.health), 10, device)
        assert {h["ring"] for h in plant.upstream.health} == {"canary"}
        log = device.log(INSPECTOR)
        # heartbeats and verdicts pass the nucleus' local pub/sub authorization (`*`, not `+`)
        assert "UnauthorizedError" not in log
        assert device.state(INSPECTOR) is State.RUNNING
    finally:
        device.stop()


def test_without_configuration_interpolation_the_thing_name_stays_literal(
    device_components: Path, plant: LocalCloud, short_root: Path
) -> None:
    thing = THING
    frames, device = new_device(short_root, device_components, plant)
    try:
        device.deploy(deployment(frames, interpolate=False))
        # {iot:thingName} stays literal in accessControl: the identity read is refused
        wait_until("the refused GetThingShadow", lambda: "UnauthorizedError" in device.log(INSPECTOR),
                   30, device)  # fmt: skip
        write_frames(frames, ["p0"])
        time.sleep(2)
        assert plant.upstream.seqs(thing) == set()
    finally:
        device.stop()


def test_spooled_results_survive_a_nucleus_restart(
    device_components: Path, plant: LocalCloud, short_root: Path
) -> None:
    thing = THING
    frames, device = new_device(short_root, device_components, plant)
    spooler = device.iot.spooler if hasattr(device.iot, "spooler") else None
    assert device.deploy(deployment(frames)).status == "SUCCESSFUL"
    try:
        plant.broker.kill()  # IoT Core unreachable: PublishToIoTCore still answers (spooled)
        write_frames(frames, [f"p{i}" for i in range(8)])
        wait_until("results spooled", lambda: spooler is not None and len(spooler) > 0, 30,
                   device)  # fmt: skip
    finally:
        device.stop()  # the nucleus stops: its in-memory spool is gone
    plant.broker.start()
    # the same root: the journal survives, the new spooler starts empty
    _, device = new_device(short_root, device_components, plant, spooler=Spooler())
    try:
        assert device.deploy(deployment(frames)).status == "SUCCESSFUL"
        wait_until("all 8 results at the cloud", lambda: len(plant.upstream.seqs(thing)) == 8, 60,
                   device)  # fmt: skip
    finally:
        device.stop()


def test_a_model_update_mid_run_judges_every_frame_and_loses_no_result(
    device_components: Path, plant: LocalCloud, short_root: Path
) -> None:
    thing = THING
    frames, device = new_device(short_root, device_components, plant)
    try:
        assert device.deploy(deployment(frames)).status == "SUCCESSFUL"
        import threading

        written: list[str] = []
        stop = threading.Event()

        def feed() -> None:  # a frame every 0.1 s until told to stop
            while not stop.is_set():
                name = f"p{len(written):04d}"
                write_frames(frames, [name])
                written.append(f"{name}.png")
                time.sleep(0.1)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            time.sleep(1.0)
            result = device.deploy(deployment(frames, model="1.1.0"))
            assert result.status == "SUCCESSFUL", result.message
            wait_until("a result from the new model",
                       lambda: any(r["model"] == "tiny@1.1.0" for r in plant.upstream.results),
                       60, device)  # fmt: skip
        finally:
            stop.set()
            feeder.join()
        wait_until(f"{len(written)} results",
                   lambda: len(plant.upstream.seqs(thing)) >= len(written), 60, device)  # fmt: skip
        stored = {r["part_id"]: r for r in plant.upstream.results if r["device"] == thing}
        # every frame judged exactly once across the restart: none passed unjudged, none lost
        assert sorted(stored) == sorted(written)
        assert len(plant.upstream.seqs(thing)) == len(written)
        models = {r["model"] for r in stored.values()}
        assert models == {"tiny@1.0.0", "tiny@1.1.0"}
    finally:
        device.stop()


def test_a_bad_model_breaks_the_component_and_the_deployment_rolls_back(
    device_components: Path, plant: LocalCloud, short_root: Path
) -> None:
    frames, device = new_device(short_root, device_components, plant)
    try:
        assert device.deploy(deployment(frames)).status == "SUCCESSFUL"
        result = device.deploy(deployment(frames, model="1.2.0"))
        # the checks fail before RUNNING is reported: three errors, BROKEN, rollback
        assert result.status == "FAILED_ROLLBACK_COMPLETE", result.message
        assert "model check failed" in device.log(INSPECTOR)
        assert device.engine.versions[MODEL] == "1.0.0"
        assert device.state(INSPECTOR) is State.RUNNING
        write_frames(frames, ["after-rollback"])
        wait_until("a result from the previous model",
                   lambda: any(r["model"] == "tiny@1.0.0" for r in plant.upstream.results), 60,
                   device)  # fmt: skip
    finally:
        device.stop()


def test_make_device_starts_a_core_device_that_judges_and_is_acknowledged(
    device_components: Path, short_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core_device.__main__ import main

    code = main(["run", "--check", "--fresh", "--root", str(short_root / "dev"),
                 "--components", str(device_components)])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "deployment SUCCESSFUL" in out.out
    assert "identity: plant demo, line line-1" in out.out
    assert "result stored and acknowledged by the cloud" in out.out
    assert ".Healthy is true" in out.out  # the inspector's heartbeats reach the bridge and the PLC


def test_make_device_names_what_is_missing(
    short_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core_device.__main__ import main

    assert main(["run", "--check", "--root", str(short_root / "dev"),
                 "--components", str(short_root / "nothing")]) == 2  # fmt: skip
    assert "not built (run `make component`)" in capsys.readouterr().err
