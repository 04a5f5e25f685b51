"""``python -m inspector run``: the long-running inspector service, on any transport.

Wiring (DESIGN.md §3): source → engine (decide) → actuation (local reject message + heartbeat) →
journal (durable, assigns ``seq``) → uplink (batched results, own thread) → health → sampler.
The reject message carries the ``seq`` the journal assigns right after it; a frame counts as
acknowledged once it is journaled (with the source's cursor, in the same transaction), so a
restart after a ``kill -9`` resumes after the last acknowledged frame and never journals it
twice, while a reject signalled just before the crash is signalled again (at-least-once).

Only this module constructs real clients (``GreengrassCoreIPCClientV2()``, paho); the stages
receive them. SIGTERM/SIGINT stop the loop cleanly: the current frame finishes, the uplink
tries a last flush, the journal is checkpointed and closed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from inspector.actuation import Actuator
from inspector.component_config import (
    check_bucket,
    check_ring,
    runtime_section,
    validate_component_config,
)
from inspector.engine import Inspector
from inspector.health import HealthReporter, engine_status
from inspector.identity import (
    IDENTITY_SHADOW,
    DeviceIdentity,
    IdentityWatch,
    ShadowReader,
    wait_for_identity,
)
from inspector.journal import Journal, JournalError
from inspector.messages import Identity, MessageError
from inspector.quality import VerdictTally
from inspector.review_station import (
    LiveFeed,
    ReviewStation,
    StationConfig,
    StationError,
    defect_types_of,
)
from inspector.runtime_config import ConfigError, RuntimeConfig
from inspector.sampler import Sampler
from inspector.sources import DirectorySource, Frame, SimulatedCamera, SourceError
from inspector.station_auth import CredentialError, read_station_file
from inspector.transports.base import Transport, TransportError
from inspector.uplink import Uplink
from inspector.uploader import BotoObjectStore, Uploader

CONNECT_WAIT_S = 10.0
# exit code when the transport can never deliver again (e.g. the Greengrass nucleus is gone):
# non-zero, so the nucleus restarts the component; results wait in the journal
EXIT_TRANSPORT_LOST = 3
# On stop the nucleus sends SIGTERM and SIGKILLs after 5 s (util/platforms/unix/UnixExec.java,
# Exec.java): the last flush, the outbox and the journal's close fit in that.
STOP_FLUSH_S = 2.0
# the model package failed its checks at start: the nucleus restarts it, BROKEN after three
EXIT_MODEL_CHECK = 4
LOG = logging.getLogger("inspector.service")
MB = 1024 * 1024
# the decisions whose parts enter the review station's queue (rejects shown on request)
REVIEWED = ("manual", "reject")


class ServiceError(Exception):
    """Bad options or a stage that cannot start: one clear line, exit code 2."""


def _integer(text: str) -> int:
    # recipe interpolation renders a deployment's 8.0 as "8.0" (nucleus KernelConfigResolver:
    # JsonNode.asText), so integral floats are integers here too
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inspector run",
        description=(
            "Run the inspector: judge frames from a folder or simulated cameras, journal every "
            "result, publish local reject messages and heartbeats, and send batched results "
            "and health upstream over the chosen transport. Stops cleanly on SIGTERM."
        ),
    )
    g = p.add_argument_group("transport")
    g.add_argument("--transport", choices=("file", "mqtt", "greengrass"), default="file")
    g.add_argument("--out", type=Path, help="file transport: directory for the JSONL files")
    g.add_argument("--host", default="127.0.0.1", help="mqtt: broker host")
    g.add_argument("--port", type=_integer, default=8883, help="mqtt: broker port (default 8883)")
    g.add_argument("--ca", type=Path, help="mqtt: CA certificate (PEM)")
    g.add_argument("--cert", type=Path, help="mqtt: this device's certificate (PEM)")
    g.add_argument("--key", type=Path, help="mqtt: this device's private key (PEM)")
    g.add_argument(
        "--config-topic", help="mqtt: topic carrying runtime configuration updates (JSON)"
    )
    g.add_argument(
        "--ipc-timeout",
        type=float,
        default=10.0,
        help="greengrass: seconds each IPC call may take; 3 in a row unanswered end the process",
    )
    g = p.add_argument_group("identity")
    g.add_argument(
        "--identity",
        choices=("flags", "shadow"),
        default="flags",
        help=(
            "flags: --plant/--line/--station/--cameras; shadow: read them from this device's "
            f"{IDENTITY_SHADOW} shadow (greengrass transport; docs/identity.md)"
        ),
    )
    g.add_argument("--plant", default="local")
    g.add_argument("--line", default="line-1")
    g.add_argument("--station", default="station-1")
    g.add_argument(
        "--identity-poll", type=float, default=30.0, help="shadow: seconds between re-reads"
    )
    g.add_argument(
        "--device",
        default=os.environ.get("AWS_IOT_THING_NAME", "local-device"),
        help="device id = thing name (default: $AWS_IOT_THING_NAME or local-device)",
    )
    g.add_argument(
        "--ring",
        default="",
        help="the rollout ring this device's deployment targets, carried in health messages "
        "(recipe: {configuration:/ring}, set by the ring's deployment; empty: none)",
    )
    g = p.add_argument_group("frames")
    g.add_argument("--images", type=Path, required=True, help="folder of images (or dataset)")
    g.add_argument(
        "--source",
        choices=("dir", "camera"),
        default="dir",
        help="dir: each file once, in arrival order; camera: simulated cameras replaying --images",
    )
    g.add_argument(
        "--judged",
        choices=("move", "delete"),
        default="move",
        help="dir: what becomes of a file once its result is journaled (default move)",
    )
    g.add_argument(
        "--judged-dir", type=Path, help="dir: where --judged move puts files (<images>/.judged)"
    )
    g.add_argument(
        "--judged-cap-mb",
        type=float,
        default=256.0,
        help="dir: the most --judged-dir keeps; the oldest files go first (default 256)",
    )
    g.add_argument(
        "--cameras", type=_integer, default=1, help="camera: number of simulated cameras"
    )
    g.add_argument("--fps", type=float, default=1.0, help="camera: frames per second each")
    g.add_argument(
        "--camera-phase",
        choices=("spread", "together"),
        default="spread",
        help="camera: spread the cameras' frames evenly over each period (free-running "
        "cameras) or take them all at once (one hardware trigger); default spread",
    )
    g.add_argument(
        "--max-frames",
        type=_integer,
        help="camera: stop after this many frames each (counted across restarts; 0: no limit)",
    )
    g.add_argument(
        "--once",
        action="store_true",
        help="dir: stop when every file is judged and the backlog is sent (else watch the folder)",
    )
    g = p.add_argument_group("model and settings")
    g.add_argument("--model", type=Path, help="model package directory (none: every frame manual)")
    g.add_argument("--shadow", type=Path, help="optional shadow model package directory")
    g.add_argument(
        "--shadow-mode",
        choices=("on", "auto", "off"),
        default="on",
        help="on: load --shadow; auto: load it if it holds a package (a Model component "
        "built with a shadow); off: ignore --shadow",
    )
    g.add_argument(
        "--require-model",
        action="store_true",
        help=(
            "exit 4 when --model fails its checks (checksum, shape, golden image) instead of "
            "sending every frame to manual; report RUNNING to the nucleus only after they pass"
        ),
    )
    g.add_argument("--threads", type=_integer, default=1, help="ONNX Runtime intra-op threads")
    g.add_argument("--max-batch", type=_integer, default=8, help="micro-batch across cameras")
    g.add_argument(
        "--judge-threads",
        type=_integer,
        default=min(4, len(os.sched_getaffinity(0))),
        help="threads judging frames side by side (default: the cores, at most 4)",
    )
    g.add_argument("--deadline-ms", type=float, default=500.0, help="frame → decision budget")
    g.add_argument("--health-interval", type=float, default=60.0, help="seconds between health")
    g.add_argument("--heartbeat-interval", type=float, default=1.0, help="seconds between beats")
    g.add_argument(
        "--ack-timeout",
        type=float,
        default=60.0,
        help="greengrass: seconds a result batch waits for the cloud's acknowledgement before "
        "it is sent again (docs/results-ack.md)",
    )
    g.add_argument(
        "--verdicts",
        action="store_true",
        help="also publish every part's verdict on lineguard/local/<station>/verdict (positive mode)",
    )
    g = p.add_argument_group("journal and sampler")
    g.add_argument("--journal", type=Path, required=True, help="journal SQLite file")
    g.add_argument("--journal-cap-mb", type=float, default=512.0, help="journal disk cap (MB)")
    g.add_argument(
        "--sample-budget-mb-per-hour", type=float, default=20.0, help="sampler bytes per hour"
    )
    g.add_argument("--sample-cap-mb", type=float, default=64.0, help="sampler disk cap (MB)")
    g.add_argument("--sample-band", type=float, default=0.1, help="near-threshold band")
    g.add_argument(
        "--drain-timeout", type=float, default=30.0, help="--once: seconds to send the backlog"
    )
    g = p.add_argument_group("sample uploads to S3 (docs/sample-uploads.md; off without a bucket)")
    g.add_argument(
        "--uploads",
        choices=("true", "false"),
        default="true",
        help="upload the sampler's images when --upload-bucket names a bucket (default true)",
    )
    g.add_argument(
        "--upload-bucket",
        default="",
        help="the S3 bucket of samples/<plant>/<device>/...; empty: samples stay on the device",
    )
    g.add_argument(
        "--upload-hold-hours",
        type=float,
        default=8.0,
        help="hold a part that waits for a verdict on the review station this long (default 8)",
    )
    g.add_argument(
        "--upload-endpoint",
        default="",
        help="local runs: an S3 endpoint URL (e.g. a moto server); empty: the region's S3",
    )
    g = p.add_argument_group("review station (docs/review-station.md; off unless bound)")
    g.add_argument(
        "--review-bind",
        default="",
        help="the one IP address the review station listens on when the operators file names "
        'none (local runs: 127.0.0.1); on a device it comes from that file ("bind")',
    )
    g.add_argument("--review-port", type=_integer, default=8088, help="its TCP port")
    g.add_argument(
        "--review-operators",
        default="",
        help="the device's operators file (python -m inspector station-password); the station "
        "does not start without one",
    )
    g.add_argument("--review-tls-cert", default="", help="serve HTTPS with this PEM certificate")
    g.add_argument("--review-tls-key", default="", help="the certificate's PEM private key")
    g.add_argument(
        "--review-allow-plain-http",
        choices=("true", "false"),
        default="false",
        help="serve plain HTTP on a plant-network address (passwords then cross it in clear); "
        "refused by default without --review-tls-cert",
    )
    g.add_argument(
        "--review-session-hours",
        type=float,
        default=8.0,
        help="a login lasts this long at most (idle logins end after 30 min)",
    )
    g.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    return p


@dataclass
class Settings:
    """Validated options of one run."""

    args: argparse.Namespace
    identity: Identity
    config: RuntimeConfig
    extra: dict[str, Any] = field(default_factory=dict)


def parse_settings(argv: Sequence[str]) -> Settings:
    """Parse and validate the options; raise ServiceError naming the bad one."""
    args = _parser().parse_args(list(argv))
    try:
        identity = Identity(args.plant, args.line, args.station, args.device)
        config = RuntimeConfig(
            deadline_ms=args.deadline_ms,
            max_batch=args.max_batch,
            intra_op_threads=args.threads,
            judge_threads=args.judge_threads,
            health_interval_s=args.health_interval,
            heartbeat_interval_s=args.heartbeat_interval,
        )
        args.ring = check_ring(args.ring)
    except (MessageError, ConfigError) as exc:
        raise ServiceError(str(exc)) from None
    if args.transport == "file" and args.out is None:
        raise ServiceError("--out is required with --transport file")
    if args.transport == "mqtt":
        missing = [n for n in ("ca", "cert", "key") if getattr(args, n) is None]
        if missing:
            raise ServiceError(f"--{missing[0]} is required with --transport mqtt")
    if args.cameras < 1:
        raise ServiceError(f"--cameras must be >= 1, got {args.cameras}")
    if args.journal_cap_mb <= 0:
        raise ServiceError(f"--journal-cap-mb must be > 0, got {args.journal_cap_mb}")
    if not 0 <= args.sample_band <= 1:
        raise ServiceError(f"--sample-band must be in [0, 1], got {args.sample_band}")
    for flag in ("sample_budget_mb_per_hour", "sample_cap_mb", "drain_timeout"):
        if getattr(args, flag) < 0:
            raise ServiceError(f"--{flag.replace('_', '-')} must be >= 0")
    if args.ack_timeout <= 0:
        raise ServiceError(f"--ack-timeout must be > 0, got {args.ack_timeout}")
    if args.fps <= 0:
        raise ServiceError(f"--fps must be > 0, got {args.fps}")
    if args.judged_cap_mb < 0:
        raise ServiceError(f"--judged-cap-mb must be >= 0, got {args.judged_cap_mb}")
    if not args.ipc_timeout > 0:
        raise ServiceError(f"--ipc-timeout must be > 0, got {args.ipc_timeout}")
    if not 0 < args.review_session_hours <= 24:
        raise ServiceError(
            f"--review-session-hours must be in (0, 24], got {args.review_session_hours}"
        )
    if not 0 < args.review_port < 65536:
        raise ServiceError(f"--review-port must be in 1..65535, got {args.review_port}")
    try:
        args.upload_bucket = check_bucket(args.upload_bucket, "--upload-bucket")
    except ConfigError as exc:
        raise ServiceError(str(exc)) from None
    if not 0 <= args.upload_hold_hours <= 168:
        raise ServiceError(f"--upload-hold-hours must be in 0..168, got {args.upload_hold_hours}")
    return Settings(args=args, identity=identity, config=config)


def with_identity(settings: Settings, found: DeviceIdentity) -> Settings:
    """The settings with plant, line, station and cameras taken from the device's identity."""
    args = argparse.Namespace(**vars(settings.args))
    args.plant, args.line, args.station, args.cameras = (
        found.plant,
        found.line,
        found.station,
        found.cameras,
    )
    try:
        identity = Identity(found.plant, found.line, found.station, settings.identity.device)
    except MessageError as exc:
        raise ServiceError(f"identity shadow: {exc}") from None
    return Settings(args=args, identity=identity, config=settings.config, extra=settings.extra)


def shadow_reader(transport: Transport, thing: str) -> ShadowReader:
    """Reads this device's identity shadow through the transport (Greengrass only)."""
    get = getattr(transport, "get_thing_shadow", None)
    if get is None:
        raise ServiceError(
            f"--identity shadow needs --transport greengrass (ShadowManager), not {transport.name}"
        )
    return lambda: get(thing, IDENTITY_SHADOW)  # type: ignore[no-any-return]


def check_paths(settings: Settings) -> str | None:
    """The journal's folder is writable and the frames folder readable; why not, or None."""
    args = settings.args
    folder = Path(args.journal).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--journal {args.journal}: cannot create {folder} ({exc.strerror})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--journal {args.journal}: {folder} is not writable by this user"
    images = Path(args.images)
    if args.source == "dir" and not args.once and not images.exists():
        try:
            images.mkdir(parents=True)  # cameras write into it once the line runs
        except OSError as exc:
            return (
                f"--images {images}: does not exist and cannot be created ({exc.strerror}); "
                "create it for the component's user, e.g. "
                f"sudo install -d -o ggc_user -g ggc_group {images}"
            )
    if not images.exists():
        return f"--images {images}: image directory not found"
    if not os.access(images, os.R_OK | os.X_OK):
        return f"--images {images}: not readable by this user"
    return None


def check_model(settings: Settings) -> str | None:
    """Load and verify ``--model`` (manifest, sha256, input shape, golden image); why not, or None."""
    from inspector.runner import ModelLoadError, ModelRunner, RunnerOptions

    args = settings.args
    if args.model is None:
        return "--require-model: no --model given"
    try:
        ModelRunner.load(
            args.model,
            RunnerOptions(
                intra_op_threads=settings.config.intra_op_threads,
                max_batch=settings.config.max_batch,
                warmup_runs=0,
            ),
        )
    except ModelLoadError as exc:
        return f"model check failed for {args.model}: {exc}"
    except Exception as exc:  # a corrupt graph can fail inside ONNX Runtime in many ways
        return f"model check failed for {args.model}: {type(exc).__name__}: {exc}"
    return None


def make_transport(args: argparse.Namespace, device: str) -> Transport:
    """The entry point's one place that constructs real clients."""
    if args.transport == "file":
        from inspector.transports.file import FileTransport

        return FileTransport(args.out)
    if args.transport == "mqtt":
        from inspector.transports.mqtt import MqttSettings, MqttTransport

        return MqttTransport(
            MqttSettings(
                host=args.host,
                port=args.port,
                client_id=device,
                ca_file=args.ca,
                cert_file=args.cert,
                key_file=args.key,
                config_topic=args.config_topic,
            )
        )
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    from inspector.transports.greengrass import GreengrassTransport

    socket_var = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
    if not os.environ.get(socket_var) or not os.environ.get("SVCUID"):
        raise ServiceError(
            f"--transport greengrass needs the Greengrass nucleus: {socket_var} and SVCUID are "
            "not set (run it as a component, or use --transport mqtt|file)"
        )
    try:
        client = GreengrassCoreIPCClientV2()
    except Exception as exc:
        raise ServiceError(f"cannot connect to the Greengrass nucleus (IPC): {exc}") from None
    return GreengrassTransport(client, call_timeout_s=args.ipc_timeout)


class Outbox:
    """Best-effort upstream publishes (health) from a background thread, so a slow or absent
    connection never stalls the frame loop; when full, the oldest message is dropped."""

    def __init__(self, publish: Callable[[str, bytes], None], *, size: int = 16) -> None:
        self._publish = publish
        self._size = size
        self._items: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def put(self, topic: str, payload: bytes) -> None:
        """Queue one message (never blocks)."""
        with self._cond:
            if len(self._items) >= self._size:
                self._items.pop(0)
                self.dropped += 1
            self._items.append((topic, payload))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._closed)
                if not self._items:
                    return
                topic, payload = self._items.pop(0)
            try:
                self._publish(topic, payload)
            except Exception as exc:
                self.failures += 1
                LOG.warning("health publish to %s failed: %s", topic, exc)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (within ``timeout_s``) and stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout_s)


class Service:
    """The running inspector: owns the stages and the frame loop.

    Args:
        settings: validated options.
        transport: where messages go (constructed by the entry point).
        stop: set to end the loop (SIGTERM does it).
        clock, wall_clock: monotonic and epoch seconds.
    """

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        args = settings.args
        self.settings = settings
        self.identity = settings.identity
        self.transport = transport
        self.stop = stop or threading.Event()
        self._clock = clock
        self._wall = wall_clock
        self._in_flight = 0
        # the camera loop's frames being judged, oldest first; committed in this order
        self._pending: deque[_Judging] = deque()
        self._judged = threading.Event()  # a pending frame's verdict is ready
        self.frames = 0
        self.transport_lost: str | None = None
        try:
            self.journal = Journal(
                args.journal,
                device=self.identity.device,
                cap_bytes=int(args.journal_cap_mb * MB),
                clock=wall_clock,
            )
        except JournalError as exc:
            raise ServiceError(str(exc)) from None
        self.engine = Inspector(
            self.identity, config=settings.config, clock=clock, wall_clock=wall_clock
        )
        if args.model is not None:
            report = self.engine.swap_model(args.model)
            if not report.ok:
                LOG.error("no model served (every frame is manual): %s", report.reason)
        shadow_path = args.shadow
        if shadow_path is not None and args.shadow_mode == "off":
            shadow_path = None
        elif (
            shadow_path is not None
            and args.shadow_mode == "auto"
            and not (Path(shadow_path) / "manifest.json").is_file()
        ):
            LOG.info("no shadow model in %s (shadow mode auto)", shadow_path)
            shadow_path = None
        if shadow_path is not None:
            shadow = self.engine.set_shadow(shadow_path)
            if not shadow.ok:
                LOG.error("no shadow model: %s", shadow.reason)
        self.uplink = Uplink(
            self.journal,
            transport,
            self.identity.topic("results"),
            ack_topic=None if transport.publish_is_delivery else self.identity.ack_topic(),
            ack_timeout_s=args.ack_timeout,
        )
        self.actuator = Actuator(
            self.identity.station,
            self.identity.device,
            transport.publish_local,
            heartbeat_interval_s=settings.config.heartbeat_interval_s,
            status=lambda: (self.engine.healthy, self.engine.model_ref),
            clock=clock,
            wall_clock=wall_clock,
            store=self.journal,
            verdicts=args.verdicts,
        )
        self.uploader: Uploader | None = None
        if args.uploads == "true" and args.upload_bucket:
            self.uploader = Uploader(
                self.journal,
                self.identity,
                BotoObjectStore(args.upload_bucket, endpoint_url=args.upload_endpoint or None),
                bytes_per_hour=int(args.sample_budget_mb_per_hour * MB),
                hold_s=args.upload_hold_hours * 3600.0,
                clock=wall_clock,
                sample_cap_bytes=int(args.sample_cap_mb * MB),
            )
        else:
            LOG.info("sample uploads off (no --upload-bucket, or --uploads false)")
        self.verdicts = VerdictTally()  # the review station's verdicts, for health
        self.health = HealthReporter(
            self.identity,
            ring=args.ring,
            interval_s=settings.config.health_interval_s,
            status=self._status,
            backlog=self.journal.backlog,
            verdicts=self.verdicts,
            publish=self._outbox_put,
            uploads=None if self.uploader is None else self.uploader.figures,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.sampler = Sampler(
            self.journal,
            band=args.sample_band,
            bytes_per_hour=int(args.sample_budget_mb_per_hour * MB),
            disk_cap_bytes=int(args.sample_cap_mb * MB),
            clock=wall_clock,
        )
        self.outbox: Outbox | None = None
        self.config_reports: list[tuple[bool, str | None]] = []
        transport.on_validate(self._validate_config)
        transport.on_config(self._on_config)
        self._dir_source: DirectorySource | None = None
        if args.source == "dir":
            self._dir_source = DirectorySource(
                args.images,
                camera="dir",
                after=self.journal.cursor("dir"),
                max_bytes=settings.config.max_image_bytes,
                judged=args.judged,
                judged_dir=args.judged_dir,
                judged_cap_bytes=int(args.judged_cap_mb * MB),
                clock=clock,
                wall_clock=wall_clock,
            )
        transport.on_component_update(self.ready_for_update)
        self.feed = LiveFeed()
        self.station = self._make_station()
        # the maps serve the station's overlay only: without it the map output is never read
        self.engine.keep_maps = self.station is not None

    def _make_station(self) -> ReviewStation | None:
        """The review station if configured (bind address and operators), else None — with
        one log line saying why not. A station that cannot be set up never stops inspection."""
        args = self.settings.args
        if not args.review_operators:
            LOG.warning(
                "review station off: no operators file configured (--review-operators; "
                "recipe reviewStation.operatorsFile) — nothing is served without a credential"
            )
            return None
        try:
            device = read_station_file(Path(args.review_operators))
            if device.bind and args.review_bind and device.bind != args.review_bind:
                raise StationError(
                    f"{args.review_operators}: bind {device.bind} but --review-bind "
                    f"{args.review_bind}; the device's file decides, drop the flag"
                )
            bind = device.bind or args.review_bind
            if not bind:
                LOG.warning(
                    "review station off: no bind address (the device's operators file "
                    '%s has no "bind"; station-password --bind)',
                    args.review_operators,
                )
                return None
            config = StationConfig(
                bind=bind,
                port=args.review_port,
                operators=device.operators,
                hosts=device.hosts,
                session_s=args.review_session_hours * 3600.0,
                tls_cert=Path(args.review_tls_cert) if args.review_tls_cert else None,
                tls_key=Path(args.review_tls_key) if args.review_tls_key else None,
                allow_plain_http=args.review_allow_plain_http == "true",
            )
        except (CredentialError, StationError) as exc:
            LOG.error("review station off: %s", exc)
            return None

        def defect_types() -> tuple[str, ...]:
            runner = self.engine.runner
            return defect_types_of(runner.manifest.metrics) if runner is not None else ()

        return ReviewStation(
            config,
            self.journal,
            self.identity,
            feed=self.feed,
            defect_types=defect_types,
            model=lambda: self.engine.model_ref,
            on_verdict=lambda review, previous: self.verdicts.record(
                decision=review.decision,
                model=review.model,
                label=str(review.label),
                previous=previous,
            ),
            clock=self._clock,
            wall_clock=self._wall,
        )

    # -- callbacks -------------------------------------------------------------------------

    def _outbox_put(self, topic: str, payload: bytes) -> None:
        if self.outbox is None:
            self.outbox = Outbox(self.transport.publish_upstream)
        self.outbox.put(topic, payload)

    def _status(self) -> dict[str, Any]:
        status = engine_status(self.engine)
        stats = self.journal.stats()
        if status.get("last_error") is None:
            if stats.dropped_results:
                status["last_error"] = f"journal_full: {stats.dropped_results} results dropped"
            elif self.uplink.stats.last_error and not self.uplink.stats.connected:
                status["last_error"] = f"uplink: {self.uplink.stats.last_error}"[:300]
        return status

    def _validate_config(self, doc: dict[str, Any]) -> str | None:
        """Greengrass: None if a proposed whole component configuration is valid, else why not."""
        try:
            validate_component_config(doc, self.settings.config)
        except ConfigError as exc:
            LOG.error("proposed configuration refused: %s", exc)
            return f"com.lineguard.Inspector configuration: {exc}"
        return None

    def _on_config(self, doc: dict[str, Any]) -> None:
        """A configuration update: the ``runtime`` section (Greengrass) or the whole document.

        Greengrass delivers the whole component configuration each time, so its ``runtime``
        section is applied onto the start-up settings (a key a deployment removed goes back to
        its start-up value); the file and mqtt transports deliver partial updates, merged onto
        the settings in force.
        """
        error: str | None
        if "__error__" in doc:
            report_ok, error = False, f"config_refused: {doc['__error__']}"
            self.engine.last_error = error
        elif self.transport.name == "greengrass":
            try:
                runtime_section(doc, self.settings.config)  # names the key as validation does
            except ConfigError as exc:
                report_ok, error = False, f"config_refused: {exc}"
                self.engine.last_error = error
            else:
                runtime = dict(doc.get("runtime", {}))
                report = self.engine.update_config(runtime, base=self.settings.config)
                report_ok, error = report.ok, report.error
        elif not isinstance(doc.get("runtime", doc), dict):
            report_ok, error = False, "config_refused: runtime: must be an object"
            self.engine.last_error = error
        else:
            report = self.engine.update_config(dict(doc.get("runtime", doc)))
            report_ok, error = report.ok, report.error
        self.config_reports.append((report_ok, error))
        if report_ok:
            LOG.info("configuration update applied")
        else:
            LOG.error("configuration update refused: %s", error)

    def ready_for_update(self) -> bool:
        """Whether a component update may restart the inspector now (else it is deferred).

        Not while a frame is being judged or a reject waits for the line bridge: the restart
        (a HARD dependency's update restarts the inspector) then falls between parts. Frames
        still waiting in the folder do not hold it up — they wait on disk and are judged after
        the restart — because on a busy line there would never be a moment without one, and
        the nucleus keeps re-asking a component that defers, for as long as it defers
        (lifecycle/UpdateSystemPolicyService.java).
        """
        return not self._in_flight and not self.actuator.pending

    # -- frames ----------------------------------------------------------------------------

    def _batches(self) -> Iterator[tuple[list[Frame], list[tuple[str, str]]]]:
        """Frame batches with the cursors (name, key) to save alongside their results."""
        args = self.settings.args
        limits = self.settings.config.max_image_bytes
        if args.source == "dir":
            source = self._dir_source
            assert source is not None
            frames = iter(source) if args.once else source.watch(self.stop, idle=self._idle)
            for frame in frames:
                yield [frame], [("dir", frame.key)]
                # resumed: the frame is journaled, so its file leaves the folder (a kill before
                # this line leaves it there; the cursor then names it and it is moved on restart)
                source.acknowledge(frame)
                if self.stop.is_set():
                    return
            return
        cameras = []
        for index in range(args.cameras):
            name = f"cam{index}"
            last = self.journal.cursor(f"camera:{name}")
            first = 0 if last is None else int(last) + 1
            cameras.append(
                SimulatedCamera(
                    args.images,
                    camera=name,
                    fps=args.fps,
                    # --max-frames counts across restarts: resume where the journal stopped
                    max_frames=None if not args.max_frames else max(0, args.max_frames - first),
                    first_part=first,
                    epoch=self.journal.epoch,
                    phase_s=(
                        index / (args.cameras * args.fps) if args.camera_phase == "spread" else 0.0
                    ),
                    max_bytes=limits,
                    clock=self._clock,
                    wall_clock=self._wall,
                )
            )
        while not self.stop.is_set() and not all(c.exhausted() for c in cameras):
            due = [f for f in (c.poll() for c in cameras) if f is not None]
            if not due:
                nxt = min(c.next_due() for c in cameras if not c.exhausted())
                self._idle(nxt)
                continue
            for start in range(0, len(due), self.settings.config.max_batch):
                batch = due[start : start + self.settings.config.max_batch]
                yield batch, [(f"camera:{f.camera}", f.key) for f in batch]

    def _idle(self, until: float) -> None:
        self._commit_judged()
        self.actuator.tick()
        self.health.tick()
        self._check_transport()
        # wake for the next due frame, for a verdict to commit, or every 50 ms (stop, ticks)
        if self._judged.wait(max(0.0, min(until - self._clock(), 0.05))):
            self._judged.clear()
        self._commit_judged()

    def _check_transport(self) -> None:
        """Stop the loop when the transport can never deliver again (the process exits 3)."""
        lost = self.transport.lost()
        if lost is not None and self.transport_lost is None:
            self.transport_lost = lost
            LOG.error("%s transport lost: %s; stopping", self.transport.name, lost)
            self.stop.set()

    def process(self, frames: list[Frame], cursors: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Judge, then commit (:meth:`_commit`) before returning: the folder source's path."""
        self._in_flight += len(frames)
        try:
            maps: list[Any] = []
            return self._commit(frames, cursors, self.engine.judge_batch(frames, maps), maps)
        finally:
            self._in_flight -= len(frames)

    def submit(self, frames: list[Frame], cursors: list[tuple[str, str]]) -> None:
        """The camera loop's path: hand frames to the judging workers and return at once.

        Each frame is its own unit (a micro-batch when the model's batch pays), so every worker
        takes the next due frame; verdicts are committed in submission order by
        :meth:`_commit_judged`, so a camera's cursor never passes a frame still being judged.
        At most ``4 × judge_threads`` units wait: beyond that the loop waits for the oldest.
        """
        runner = self.engine.runner
        config = self.engine.config
        step = config.max_batch if runner is not None and runner.batch_pays else 1
        for start in range(0, len(frames), step):
            unit, marks = frames[start : start + step], cursors[start : start + step]
            while len(self._pending) >= 4 * config.judge_threads:
                self._commit_judged(wait=True)
            maps: list[Any] = []
            future = self.engine.submit(unit, maps)
            future.add_done_callback(lambda _: self._judged.set())
            self._in_flight += len(unit)
            self._pending.append(_Judging(future, unit, marks, maps))
        self._commit_judged()

    def _commit_judged(self, *, wait: bool = False, everything: bool = False) -> None:
        """Commit the judged frames at the head of the queue, in one journal transaction.

        ``wait``: wait for the oldest if none is ready; ``everything``: wait for all of them.
        """
        done: list[_Judging] = []
        while self._pending:
            head = self._pending[0]
            if not head.future.done() and not (everything or (wait and not done)):
                break
            head.future.result()  # judge_batch never raises: this only waits
            done.append(self._pending.popleft())
        if not done:
            return
        frames = [f for item in done for f in item.frames]
        try:
            self._commit(
                frames,
                [c for item in done for c in item.cursors],
                [r for item in done for r in item.future.result()],
                [m for item in done for m in item.maps],
            )
        finally:
            self._in_flight -= len(frames)

    def _commit(
        self,
        frames: list[Frame],
        cursors: list[tuple[str, str]],
        results: list[dict[str, Any]],
        maps: Sequence[Any] = (),
    ) -> list[dict[str, Any]]:
        """Actuate, journal (with the cursors), record health, offer to the sampler (with the
        frames' anomaly maps, when the engine kept them: ``maps``).

        The local reject message goes out first, carrying the ``seq`` the journal is about to
        assign (the loop holds the journal's ``seq`` counter from reading it to the commit, so
        the review station's labels wait; taking it, the loop waits for at most one label's
        commit): a crash after it and before the commit
        re-judges the frame on restart and signals it again (at-least-once, as the line bridge
        expects); a crash before it loses nothing either. Only the commit acknowledges a frame.
        """
        with self.journal.reserve():
            first = self.journal.next_seq()
            for offset, result in enumerate(results):
                result["seq"] = first + offset
                self.actuator.on_result(result)
            seqs = self.journal.append_many(
                results, cursors=cursors, review=REVIEWED if self.station else ()
            )
        if seqs[:1] != [first]:
            raise JournalError(f"{self.journal.path}: seq moved under the frame loop")
        for result in results:
            self.health.record(result)
            if self.station is not None:
                self.feed.record(result)
        heat = list(maps) if len(maps) == len(frames) else [None] * len(frames)
        for frame, result, amap in zip(frames, results, heat, strict=True):
            try:
                self.sampler.offer(result, frame.data, amap)
            except JournalError as exc:
                LOG.warning("sampler: %s", exc)
        self.frames += len(frames)
        return results

    def run(self) -> int:
        """The frame loop; returns the exit code."""
        args = self.settings.args
        uplink_stop = threading.Event()
        uplink_thread = threading.Thread(
            target=self.uplink.run,
            args=(uplink_stop,),
            kwargs={"final_flush_s": STOP_FLUSH_S},
            name="uplink",
            daemon=True,
        )
        uplink_thread.start()
        uploader_stop = threading.Event()
        uploader_thread: threading.Thread | None = None
        if self.uploader is not None:
            uploader_thread = threading.Thread(
                target=self.uploader.run, args=(uploader_stop,), name="uploader", daemon=True
            )
            uploader_thread.start()
        if self.station is not None:
            try:
                self.station.start()
            except StationError as exc:
                LOG.error("review station off: %s", exc)
                self.station = None
        if not self.transport.wait_connected(CONNECT_WAIT_S):
            LOG.warning(
                "%s transport not connected after %.0f s: judging anyway; rejects wait for the "
                "local bus and results in the journal",
                self.transport.name,
                CONNECT_WAIT_S,
            )
        print(
            f"inspector: {self.identity.device} judging {args.source} frames from {args.images}"
            f" with {self.engine.model_ref or 'NO MODEL (every frame manual)'};"
            f" transport {self.transport.name}, journal {args.journal}"
            f" (backlog {self.journal.backlog()})",
            file=sys.stderr,
        )
        try:
            for frames, cursors in self._batches():
                if args.source == "dir":
                    self.process(frames, cursors)  # its file leaves the folder once committed
                else:
                    self.submit(frames, cursors)
                self.actuator.tick()
                self.health.tick()
                self._check_transport()
                if self.stop.is_set():
                    break
            self._commit_judged(everything=True)  # frames being judged are committed, not lost
            if args.once and not self.stop.is_set():
                LOG.info("all frames judged; sending the backlog")
                deadline = self._clock() + args.drain_timeout
                while (
                    self.journal.backlog() or not self.actuator.flush()
                ) and self._clock() < deadline:
                    if self.stop.wait(0.05):
                        break
        finally:
            uplink_stop.set()
            uploader_stop.set()
            uplink_thread.join(timeout=STOP_FLUSH_S + 1.0)
            if uploader_thread is not None:
                # a PutObject in flight is not waited for: its sample stays in the journal and
                # goes again (to the same key) at the next start
                uploader_thread.join(timeout=0.5)
            if self.outbox is not None:
                self.outbox.close(timeout_s=1.0)
            # after the flush and bounded: a tablet never delays the results nor the journal's
            # close (a label given meanwhile is journaled and goes up at the next start)
            if self.station is not None:
                self.station.stop()
            backlog = self.journal.backlog()
            self.journal.close()
            self.transport.close()
        print(
            f"inspector: stopped after {self.frames} frames;"
            f" {self.uplink.stats.results_sent} results sent in {self.uplink.stats.publishes}"
            f" publishes, {backlog} waiting in the journal",
            file=sys.stderr,
        )
        if self.transport_lost is not None:
            print(
                f"error: lost the {_transport_title(self.transport.name)}: "
                f"{self.transport_lost} (the results wait in the journal)",
                file=sys.stderr,
            )
            return EXIT_TRANSPORT_LOST
        if args.once and backlog:
            print(f"error: {backlog} results could not be sent upstream", file=sys.stderr)
            return 1
        if self.actuator.pending or self.actuator.dropped:
            print(
                f"error: {self.actuator.pending + self.actuator.dropped} reject messages never"
                " reached the local bus",
                file=sys.stderr,
            )
            return 1
        return 0


@dataclass
class _Judging:
    """Frames handed to the judging workers, waiting to be committed."""

    future: Future[list[dict[str, Any]]]
    frames: list[Frame]
    cursors: list[tuple[str, str]]
    maps: list[Any] = field(default_factory=list)  # filled by the engine (anomaly maps)


def _transport_title(name: str) -> str:
    return "Greengrass nucleus" if name == "greengrass" else f"{name} transport"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m inspector run``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_settings(argv)
    except SystemExit as exc:  # argparse: --help or a usage error (already printed)
        return int(exc.code or 0)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    level = logging.INFO if settings.args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # also when ``python -m inspector`` configured logging
    stop = threading.Event()
    signalled = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        LOG.info("signal %d: stopping", signum)
        signalled.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        transport = make_transport(settings.args, settings.identity.device)
    except (TransportError, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = check_paths(settings)
    if problem is not None:  # before RUNNING: a deployment with a bad path fails, not later
        transport.close()
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if settings.args.require_model:
        problem = check_model(settings)
        if problem is not None:
            transport.close()
            print(f"error: {problem}", file=sys.stderr)
            return EXIT_MODEL_CHECK
    try:
        # Under Greengrass the component is STARTING until this (a `startup` step: nucleus
        # GenericExternalService.startup); a model that failed its checks above never gets
        # here, so the nucleus restarts it, marks it BROKEN after three errors, and the
        # deployment fails and rolls back (DeploymentConfigMerger).
        transport.report_running()
    except TransportError as exc:
        transport.close()
        print(f"error: cannot report RUNNING to the nucleus: {exc}", file=sys.stderr)
        return 1
    watch: IdentityWatch | None = None
    if settings.args.identity == "shadow":
        device = settings.identity.device
        try:
            read = shadow_reader(transport, device)
            found = wait_for_identity(read, device, stop)
            if found is None:  # stopped before an identity arrived
                transport.close()
                return 0
            settings = with_identity(settings, found)
        except ServiceError as exc:
            transport.close()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        watch = IdentityWatch(read, device, found, stop, poll_s=settings.args.identity_poll)
    try:
        service = Service(settings, transport, stop=stop)
    except (ServiceError, SourceError) as exc:
        transport.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TransportError as exc:  # e.g. the nucleus did not answer a subscription
        transport.close()
        print(f"error: lost the {_transport_title(transport.name)}: {exc}", file=sys.stderr)
        return EXIT_TRANSPORT_LOST
    if watch is not None:
        watch.start()
    try:
        code = service.run()
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if watch is not None and watch.changed is not None and not signalled.is_set():
        # Every stage (topics, station, cameras, subscriptions) starts afresh under the new
        # identity: the same process image again, so the nucleus keeps tracking one process.
        print(f"inspector: identity changed to {watch.changed}; starting again", file=sys.stderr)
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return code
