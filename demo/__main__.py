"""``make demo``: a whole plant on this machine, and the report that shows why edge inference wins.

Steps: sample dataset → train model 1.0.0 → evaluate → build the components as they would be
published → synthesise every plant with the real CDK CLI → run the demo plant's line (simulated
cameras at 1 fps through real inspector processes, MQTT with client certificates, line bridges
writing to a simulated OPC UA PLC; operators review parts on the stations in headless Chromium;
the devices upload their samples to a local S3) → merge the labelled samples into the dataset
and train 1.1.0 from it → promote 1.1.0 through the simulated fleet → model the plant at scale →
``out/demo/report.html``.

Work already done (dataset, trained models, component wheels) is reused on the next run; pass
``--fresh`` to redo it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demo.local_s3 import BUCKET, LocalS3

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = "brick"
MODEL_VERSION, NEXT_VERSION = "1.0.0", "1.1.0"
DEFECT_SHARE = 0.15  # share of defective parts the demo's cameras see
# The review stations' login, for this demo only (every device's station serves loopback): a
# real device's operators file is written at provisioning with each person's own password.
DEMO_OPERATOR, DEMO_PASSWORD = "demo-operator", "demo-only-password"
REVIEW_PARTS = 2  # parts the demo's review turn gives a verdict per station
REVIEW_AT = 0.4  # the review turn starts when this share of the line's frames is judged


class DemoError(RuntimeError):
    """A demo step failed; the message names the step and where its log is."""


class Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0
        self.started = time.monotonic()
        self.times: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def begin(self, title: str) -> None:
        """Announce the next step."""
        self.end()
        self.n += 1
        print(f"[{self.n}/{self.total}] {title} …", flush=True)
        self._current = (title, time.monotonic())

    def end(self) -> None:
        """Close the current step and print how long it took."""
        if self._current is not None:
            title, t0 = self._current
            self.times[title] = round(time.monotonic() - t0, 1)
            print(f"      done in {self.times[title]:.1f} s", flush=True)
            self._current = None

    def note(self, text: str) -> None:
        """A progress line inside a step."""
        print(f"      {text}", flush=True)

    @property
    def elapsed(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.started


def run(cmd: Sequence[str], log: Path, what: str, timeout: float = 1800) -> str:
    """Run a command with its output in ``log``; raise :class:`DemoError` naming it on failure."""
    from demo.local_line import child_env

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.run(
            list(cmd), cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
            timeout=timeout, check=False,
        )  # fmt: skip
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise DemoError(f"{what} failed (exit {proc.returncode}); log: {log}\n{tail}")
    return text


def shown(path: Path) -> str:
    """A path as printed: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def py(*args: str) -> list[str]:
    """A command line running this Python."""
    return [sys.executable, *args]


def make_camera_folders(
    dataset: Path, out: Path, stations: dict[str, int], seed: int
) -> dict[str, Any]:
    """Shuffle a held-out dataset into one replay folder per station; return the ground truth.

    The folder holds every good image and enough defective ones for :data:`DEFECT_SHARE`.

    Cameras replay their folder in name order, so the files are renamed to their shuffled position
    and ``truth[station][name]`` keeps what each one really is (``good`` or the defect type).
    """
    from training.dataset import load_dataset

    held_out = load_dataset(dataset)
    rng = random.Random(seed)
    defects = list(held_out.defects)
    rng.shuffle(defects)
    wanted = round(DEFECT_SHARE / (1 - DEFECT_SHARE) * len(held_out.good))
    samples = list(held_out.good) + defects[:wanted]
    truth: dict[str, dict[str, str]] = {}
    for station in stations:
        folder = out / station
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        picked = samples[:]
        rng.shuffle(picked)
        truth[station] = {}
        for i, sample in enumerate(picked):
            name = f"{i:05d}{sample.path.suffix}"
            shutil.copyfile(sample.path, folder / name)
            truth[station][name] = "good" if sample.label == 0 else sample.defect_type or "defect"
    return truth


def anomaly_maps(
    model_dir: Path, rejects: list[tuple[dict[str, Any], Path]], out: Path
) -> list[dict[str, Any]]:
    """Image + anomaly map of rejected parts (result, judged image), recomputed with the package.

    The frame goes through the device's path (region of interest, fit, tiles; the tiles' maps
    stitched), so any package gives its map; ``region`` is the frame box the map covers.
    """
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from inspector.model_package import load_package
    from inspector.preprocess import combine_tiles, frame_tensors, region

    package = load_package(model_dir)
    spec = package.manifest
    if spec.outputs.anomaly_map is None or not rejects:
        return []
    session = ort.InferenceSession(str(package.model_path), providers=["CPUExecutionProvider"])
    outputs = [spec.outputs.score, spec.outputs.anomaly_map]
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for result, source in rejects:
        with Image.open(source) as image:
            image.load()
            tensors = frame_tensors(image, spec.input, spec.frames)
            size = image.size
        # one tile a call: a fixed-batch graph (what training exports) takes one
        runs = [session.run(outputs, {spec.input.name: tile[None]}) for tile in tensors]
        scores = [float(v) for r in runs for v in np.asarray(r[0]).reshape(-1)]
        maps = [m for r in runs for m in r[1]]
        _, heat = combine_tiles(scores, maps, spec.input, size)
        map_path = out / f"{result['station']}-{result['part_id']}.npy"
        np.save(map_path, np.asarray(heat).squeeze())
        items.append(
            {"part_id": result["part_id"], "camera": result["camera"],
             "decision": result["decision"], "score": result["score"],
             "threshold": result["threshold"], "image": str(source), "map": str(map_path),
             "region": list(region(size, spec.input))}
        )  # fmt: skip
    return items


def _model_kind(package: Path) -> str:
    """The package's model kind and, when training chose between candidates, their figures."""
    recorded = json.loads((package / "manifest.json").read_text()).get("metrics", {})
    kind = str(recorded.get("model", "patchcore"))
    selection = recorded.get("selection")
    if not selection:
        return kind
    figures = ", ".join(
        f"{name} {c['validation_auroc']:.3f}"
        for name, c in selection["candidates"].items()
        if c.get("validation_auroc") is not None
    )
    return f"{kind} (validation AUROC: {figures})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit 0 with ``out/demo/report.html`` written, 1 when a step fails."""
    parser = argparse.ArgumentParser(
        prog="make demo", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo", help="output folder")
    parser.add_argument("--frames", type=int, default=60, help="frames per camera (default 60)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames per second per camera")
    parser.add_argument("--seed", type=int, default=1, help="dataset and model seed")
    parser.add_argument("--fresh", action="store_true", help="redo cached work (data, models)")
    parser.add_argument("--no-browser", action="store_true", help="skip the headless-browser check")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.fps <= 0:
        parser.error("--frames must be >= 1 and --fps > 0")
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        return _demo(args)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _demo(args: argparse.Namespace) -> int:
    from stacks.config import load_plant
    from training.quantize import host_has_vnni

    out: Path = args.out
    logs = out / "logs"
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    plant = load_plant(ROOT / "plants" / "demo.yaml")
    line = plant.lines[0]
    steps = Steps(10)
    notes: list[str] = []

    steps.begin(f"Sample dataset ({PRODUCT}) and a held-out batch for the cameras")
    dataset, line_data = out / "data", out / "line-data"
    # the training set at the benchmark size; the cameras' held-out batch only needs ~60 parts
    for folder, seed, size in (
        (dataset, args.seed, "large"),
        (line_data, args.seed + 1000, "small"),
    ):
        if not (folder / PRODUCT / "good").is_dir():
            run(py("-m", "training.sample_data", "--out", str(folder), "--seed", str(seed),
                   "--size", size, "--products", PRODUCT),
                logs / f"sample-data-{seed}.log", "sample data")  # fmt: skip
        else:
            steps.note(f"reusing {shown(folder)}")

    models: dict[str, Path] = {}
    # the demo's devices run on this machine: int8 only where its kernels are the ones the
    # int8 settings are for (training.quantize), float elsewhere
    precision = "int8" if host_has_vnni() else "float"
    steps.begin(f"Train model {PRODUCT}@{MODEL_VERSION}")
    models[MODEL_VERSION] = _train(
        out, dataset / PRODUCT, MODEL_VERSION, args.seed, precision, logs, steps
    )

    steps.begin(f"Evaluate {PRODUCT}@{MODEL_VERSION} on its held-out test split")
    metrics_path = out / "metrics.json"
    run(py("-m", "training.evaluate", "--model-dir", str(models[MODEL_VERSION]),
           "--data", str(dataset / PRODUCT), "--out", str(metrics_path)),
        logs / "evaluate.log", "evaluation")  # fmt: skip
    metrics = json.loads(metrics_path.read_text())
    steps.note(f"image AUROC {metrics.get('image_auroc', metrics.get('auroc'))}")

    steps.begin("Build the Inspector, LineBridge and Model components as they would be published")
    components = out / "components"
    run(py(str(ROOT / "edge_component" / "build.py"), "--out", str(components),
           "--component", "com.lineguard.Inspector", "--component", "com.lineguard.LineBridge",
           "--component", "com.lineguard.Model", "--model-package", str(models[MODEL_VERSION])),
        logs / "build-components.log", "component build")  # fmt: skip
    built = sorted(str(p.relative_to(out)) for p in components.glob("*/*") if p.is_dir())
    steps.note("built " + ", ".join(built))

    steps.begin("Synthesise every plant with the CDK CLI (cdk-nag on)")
    cdk_out = out / "cdk.out"
    run(["npx", "cdk", "synth", "--quiet", "-o", str(cdk_out), "-c", f"components_dir={components}"],
        logs / "cdk-synth.log", "cdk synth")  # fmt: skip
    stacks = sorted(p.name.removesuffix(".template.json") for p in cdk_out.glob("*.template.json"))
    steps.note("stacks: " + ", ".join(stacks))
    describe = run(
        py("-m", "stacks.describe", "--plant", "demo"), logs / "describe.log", "describe"
    )
    (out / "demo-plant.txt").write_text(describe)

    steps.begin(
        f"Run line {line.name}: {sum(s.cameras for s in line.stations)} cameras at "
        f"{args.fps:g} fps for {args.frames} frames, MQTT + OPC UA PLC"
    )
    s3 = LocalS3().start()
    run_data = _run_line(
        args, out, plant, models[MODEL_VERSION], line_data / PRODUCT, steps, notes, s3
    )

    steps.begin(f"Retrain {PRODUCT}@{NEXT_VERSION} from the samples the devices uploaded")
    run_data["field"] = _retrain_from_field(
        s3, plant.name, dataset / PRODUCT, run_data, out, logs, steps
    )
    s3.stop()
    models[NEXT_VERSION] = _train(
        out, Path(run_data["field"]["data"]), NEXT_VERSION, args.seed + 1, precision, logs, steps
    )
    field_samples = json.loads((models[NEXT_VERSION] / "manifest.json").read_text())["metrics"].get(
        "field_samples"
    )
    run_data["field"]["trained"] = {
        "model": f"{PRODUCT}@{NEXT_VERSION}",
        "field_samples": json.dumps(field_samples, sort_keys=True),
    }
    steps.note(f"{PRODUCT}@{NEXT_VERSION} trained; its field samples: {field_samples}")

    steps.begin(
        f"Promote {PRODUCT}@{NEXT_VERSION} through the demo plant's rings (simulated fleet)"
    )
    releases = out / "releases"
    releases.mkdir(exist_ok=True)
    shutil.copyfile(ROOT / "releases" / "demo.json", releases / "demo.json")
    state = out / "rollout-state"
    shutil.rmtree(state, ignore_errors=True)
    report_text = run(
        py("-m", "rollout", "promote", "--plant", "demo", "--model-package",
           str(models[NEXT_VERSION]), "--simulate", "good", "--json",
           "--releases-dir", str(releases), "--state-dir", str(state)),
        logs / "promote.log", "promotion",
    )  # fmt: skip
    rollout = json.loads(report_text[report_text.index("{") :])
    steps.note(f"rollout {rollout.get('status')}: releases in {shown(releases)}")

    steps.begin("Model the plant at scale: cloud vs edge inference over a shared uplink")
    from demo import plant_model

    measured = plant_model.measured_from_run(run_data["results"], run_data["frame_files"])
    model = plant_model.run_sweep(measured)
    (out / "plant_model.json").write_text(json.dumps(model, indent=1))
    steps.note(model["statement"])

    steps.begin("Write the report")
    from demo import report

    data = {
        "title": "LineGuard demo report",
        "summary": {
            "plant": plant.name,
            "line": line.name,
            "cameras": run_data["cameras"],
            "frames judged": len(run_data["results"]),
            "transport": run_data["transport"],
            "model": f"{PRODUCT}@{MODEL_VERSION}",
            "model image AUROC (held-out)": metrics.get("image_auroc", metrics.get("auroc")),
            "model kind (kept by validation)": _model_kind(models[MODEL_VERSION]),
            "stacks synthesised": ", ".join(stacks),
            "demo wall time (s)": round(steps.elapsed),
        },
        "notes": notes,
        "results": run_data["report_results"],
        "health": run_data["health"],
        "anomaly_maps": run_data["anomaly_maps"],
        "plc": run_data["plc"],
        "bytes": run_data["bytes"],
        "rollout": rollout,
        "rollout_bake_s": {r.name: r.bake_minutes * 60 for r in plant.rings},
        "plant_model": model,
        "review": run_data["review"],
        "field": run_data.get("field"),
    }
    (out / "report-data.json").write_text(json.dumps(data, indent=1, default=str))
    page = report.write_report(data, out, base=out)
    if not args.no_browser and shutil.which("chromium"):
        from demo import browser

        check = browser.check_page(page, screenshot=out / "report-screenshot.png")
        broken = [i["alt"] for i in check.images if not i["complete"] or not i["width"]]
        steps.note(
            f"headless Chromium: {len(check.images) - len(broken)}/{len(check.images)} plots "
            f"rendered, {len(check.console_errors)} console errors; screenshot "
            f"{shown(out / 'report-screenshot.png')}"
        )
    steps.end()

    plc = run_data["plc_summary"]
    print()
    print(
        f"LineGuard demo: {len(run_data['results'])} frames judged on {run_data['cameras']} cameras"
    )
    print(f"  decisions: {run_data['decisions']}")
    if plc is not None:
        print(f"  PLC: {plc['seen']} of {plc['expected']} rejects/manuals seen, "
              f"{plc['missed']} missed, decision → PLC p50 {plc['p50_ms']} ms, "
              f"p99 {plc['p99_ms']} ms")  # fmt: skip
    else:
        print("  PLC: not run (no broker)")
    b = run_data["bytes"]
    print(f"  upstream: {b['upstream_total']:,} bytes for {b['images_bytes']:,} bytes of images "
          f"({b['images_bytes'] / max(1, b['upstream_total']):.0f}× less)")  # fmt: skip
    review = run_data["review"]
    for station in review["stations"]:
        print(f"  review station {station['station']} ({station['device']}): {station['url']}/ "
              f"(served while the line ran)")  # fmt: skip
    if review["stations"]:
        print(f"    login (demo only): {DEMO_OPERATOR} / {DEMO_PASSWORD}")
    print(f"  review turn: {review['summary']}")
    print(f"  rollout of {NEXT_VERSION}: {rollout.get('status')}")
    print(f"  plant model: {model['statement']}")
    print(f"  report: {page}")
    print(f"  wall time: {steps.elapsed:.0f} s")
    return 0


def _run_line(
    args: argparse.Namespace,
    out: Path,
    plant: Any,
    model_dir: Path,
    line_data: Path,
    steps: Steps,
    notes: list[str],
    s3: LocalS3 | None = None,
) -> dict[str, Any]:
    """Run the demo plant's line and collect what the cloud, the PLC and the devices saw
    (the devices upload their samples to ``s3`` when given)."""
    from demo.broker import BrokerError
    from demo.local_line import Device

    line = plant.lines[0]
    devices = [
        Device(name=f"{plant.name}-{line.name}-{s.name}", station=s.name, cameras=s.cameras)
        for s in line.stations
    ]
    frames_dir = out / "frames"
    truth = make_camera_folders(line_data, frames_dir, {d.station: d.cameras for d in devices}, 7)
    (out / "frames-truth.json").write_text(json.dumps(truth, indent=1))
    workdir = out / "line"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    workdir.chmod(0o755)  # mosquitto drops root and must read the certificates
    try:
        seen = _line_on_core_devices(
            args, plant, devices, frames_dir, out, workdir, steps, _truth_of(frames_dir, truth), s3
        )
    except (BrokerError, OSError, TimeoutError) as exc:
        notes.append(
            f"The local cloud (mosquitto) could not start ({exc}), so the inspectors used the "
            "file transport outside the nucleus stand-in; the line bridges and the PLC did not run."
        )
        steps.note(notes[-1])
        seen = _line_over_files(args, plant, devices, frames_dir, model_dir, workdir)
    collected = _collect(seen, devices, frames_dir, truth, model_dir, out)
    collected["review"] = _review_data(seen, notes)
    notes.extend(f"The review turn's results: {t}." for t in seen.get("timeouts", []))
    return collected


def _train(
    out: Path, data: Path, version: str, seed: int, precision: str, logs: Path, steps: Steps
) -> Path:
    """Train ``PRODUCT@version`` from ``data`` (the first version is reused when present; the
    next one is trained on this run's field samples, so never)."""
    target = out / "models" / f"{PRODUCT}-{version}"
    if version == MODEL_VERSION and (target / "manifest.json").is_file():
        steps.note(f"reusing {shown(target)}")
        return target
    shutil.rmtree(target, ignore_errors=True)
    run(py("-m", "training.train", "--data", str(data), "--model-dir", str(target),
           "--name", PRODUCT, "--version", version, "--seed", str(seed),
           "--precision", precision),
        logs / f"train-{version}.log", f"training {version}")  # fmt: skip
    return target


def _retrain_from_field(
    s3: LocalS3,
    plant: str,
    base: Path,
    run_data: dict[str, Any],
    out: Path,
    logs: Path,
    steps: Steps,
) -> dict[str, Any]:
    """One turn of the loop: what the devices uploaded to the local S3 (samples with the
    operators' labels, docs/sample-uploads.md), merged with the base dataset by
    ``training.merge`` — the pipeline's ``SamplesPrefix`` step — into the next version's data."""
    uploaded = s3.uploaded(plant)
    steps.note(
        f"{uploaded.objects} samples ({uploaded.bytes / 1e6:.2f} MB) uploaded to "
        f"{s3.samples_url(plant)} on the local S3 (moto server): "
        + (", ".join(f"{k} {v}" for k, v in uploaded.layouts.items()) or "none")
    )
    from training.merge import merge_samples

    merged = out / "field-data"
    shutil.rmtree(merged, ignore_errors=True)
    with (logs / "merge.log").open("w") as log:
        summary = merge_samples(
            base, s3.samples_url(plant), merged, s3_client=s3.client("s3"),
            log=lambda line: print(line, file=log, flush=True),
        ).to_json()  # fmt: skip
    used = summary.get("used", {})
    steps.note(
        f"merged into {shown(merged)}: {sum(used.values())} labelled sample(s) "
        f"({', '.join(f'{k} {v}' for k, v in used.items()) or 'none'}) beside the base dataset; "
        f"{sum(summary.get('unlabelled', {}).values())} unlabelled ones counted, not trained on"
    )
    labels = run_data.get("review", {}).get("labels", [])
    return {
        "bucket_url": s3.samples_url(plant),
        "uploaded": uploaded.to_json(),
        "labels_reviewed": len(labels),
        "merge": summary,
        "data": str(merged),
    }


def _review_data(seen: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The report's review section: the stations, the turn, the labels that reached the cloud
    (the standing verdict per part: the highest revision per device and result seq)."""
    turn = seen.get("review_turn")
    standing: dict[tuple[str, int], dict[str, Any]] = {}
    for label in seen.get("labels", []):
        key = (str(label.get("device")), int(label.get("result_seq", 0)))
        if key not in standing or int(label.get("revision", 0)) > int(
            standing[key].get("revision", 0)
        ):
            standing[key] = label
    labels = sorted(standing.values(), key=lambda m: (str(m.get("ts")), str(m.get("device"))))
    if turn is None:
        summary = seen.get("review_skipped", "not run")
    else:
        summary = (
            f"{len(turn.verdicts)} verdict(s) given through the page in headless Chromium in "
            f"{turn.seconds:.1f} s; {len(labels)} label(s) reached the cloud"
        )
        if turn.problems:
            summary += "; problems: " + "; ".join(turn.problems)
    if turn is not None and turn.problems:
        notes.append("Review turn: " + "; ".join(turn.problems))
    return {
        "stations": seen.get("stations", []),
        "credentials": {"operator": DEMO_OPERATOR, "password": DEMO_PASSWORD, "demo_only": True},
        "summary": summary,
        "labels": labels,
        "screenshot": str(turn.screenshot) if turn is not None and turn.screenshot else None,
    }


def _station_files(root: Path, port: int) -> Path:
    """Set up a device's review station as provisioning would: its operators file, written by
    ``python -m inspector station-password`` (the demo's login; bind: loopback)."""
    path = root / "review-operators.json"
    from demo.local_line import child_env

    done = subprocess.run(
        py("-m", "inspector", "station-password", "--operator", DEMO_OPERATOR,
           "--bind", "127.0.0.1", "--file", str(path)),
        input=DEMO_PASSWORD + "\n", capture_output=True, text=True, env=child_env(),
        timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoError(f"station-password for {path} failed: {done.stderr.strip()}")
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _truth_of(frames_dir: Path, truth: dict[str, dict[str, str]]) -> Any:
    """What a part id of a station's cameras really is: the replayed file's ground truth."""
    names = {station: sorted(files) for station, files in truth.items()}

    def of(station: str, part_id: str) -> str | None:
        files = names.get(station)
        try:
            index = int(part_id.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return None
        if not files:
            return None
        return truth[station][files[index % len(files)]]

    return of


def _start_review(
    args: argparse.Namespace,
    stations: list[Any],
    truth_of: Any,
    out: Path,
    seen: dict[str, Any],
) -> Any:
    """The review turn in a thread, once REVIEW_AT of the line's frames are judged (the
    stations serve only while their inspectors run): None when there is no browser."""
    import threading

    from demo import browser

    if args.no_browser or browser.find_chromium() is None:
        seen["review_skipped"] = (
            "not run: no Chromium on this machine (the stations were served; the demo goes on)"
            if not args.no_browser
            else "not run (--no-browser)"
        )
        return None

    def turn() -> None:
        from demo.station_review import review_turn

        time.sleep(REVIEW_AT * args.frames / args.fps)
        seen["review_turn"] = review_turn(
            stations, truth_of, parts_per_station=REVIEW_PARTS,
            screenshot=out / "station-screenshot.png",
            deadline_s=max(10.0, (1 - REVIEW_AT) * args.frames / args.fps - 5),
        )  # fmt: skip

    thread = threading.Thread(target=turn, name="review-turn", daemon=True)
    thread.start()
    return thread


def _wait_for(procs: Sequence[subprocess.Popen[bytes]], names: Sequence[str], args: argparse.Namespace,
              workdir: Path, progress: Any) -> None:  # fmt: skip
    """Wait for the inspector processes to finish their frames; fail naming a bad one."""
    deadline = time.monotonic() + args.frames / args.fps + 180
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline:
            raise DemoError(f"inspectors did not finish; logs in {workdir}")
        time.sleep(5)
        progress()
    for name, proc in zip(names, procs, strict=True):
        if proc.returncode != 0:
            raise DemoError(f"inspector {name} exited {proc.returncode}; log {workdir}/{name}.log")


def _line_on_core_devices(
    args: argparse.Namespace,
    plant: Any,
    devices: Sequence[Any],
    frames_dir: Path,
    out: Path,
    workdir: Path,
    steps: Steps,
    truth_of: Any,
    s3: LocalS3 | None = None,
) -> dict[str, Any]:
    """One local core device per station (the nucleus stand-in, ``core_device``) deploying the
    demo release's canary ring — Inspector, Model, LineBridge through their recipes — against
    mosquitto for IoT Core (with the plant's AckRule) and a simulated OPC UA PLC. Each
    inspector serves its review station on loopback; the review turn runs while the line does.
    With ``s3``, each device's token exchange service gets its credentials there and the
    inspectors upload their samples to it (the nucleus' environment names it for S3).
    """
    import tempfile
    import threading

    from core_device.local import Identity, LocalCloud, ring_deployment, start_device
    from demo.local_line import PlcThread, percentile, wait_until
    from demo.station_review import StationAccess
    from line_bridge.messages import parse_ts
    from line_bridge.plc_sim import OpcUaPlc

    line = plant.lines[0]
    components = out / "components"
    # a Unix socket path is at most 107 bytes: the device roots live under /tmp, linked from out/
    roots = Path(tempfile.mkdtemp(prefix="lineguard-demo-", dir="/tmp"))
    roots.chmod(0o755)
    cloud = LocalCloud(plant.name, [d.name for d in devices], roots / "cloud").start()
    plc = OpcUaPlc([d.station for d in devices])
    plc_thread = PlcThread(plc)
    plc_thread.start()
    observed: dict[tuple[str, str], dict[str, Any]] = {}
    lock = threading.Lock()

    def tap(_publisher: str, topic: str, payload: bytes) -> None:
        if topic.endswith("/reject"):
            doc = json.loads(payload)
            doc["_observed_at"] = time.time()
            with lock:
                observed.setdefault((doc["station"], doc["part_id"]), doc)

    core: list[Any] = []
    stations: list[StationAccess] = []
    review: dict[str, Any] = {}
    review_thread = None
    endpoint = s3.as_devices_endpoint() if s3 is not None else contextlib.nullcontext()
    endpoint.__enter__()
    try:
        requests = {}
        for d in devices:
            root = roots / d.name
            (workdir / d.name).unlink(missing_ok=True)
            (workdir / d.name).symlink_to(root, target_is_directory=True)
            device = start_device(root, d.name, Identity(plant.name, line.name, d.station, d.cameras),
                                  components_dir=components, cloud=cloud,
                                  credentials=None if s3 is None else s3.credentials_for(d.name))  # fmt: skip
            device.ipc.observe_local(tap)
            core.append(device)
            port = _free_port()
            operators = _station_files(root, port)
            stations.append(StationAccess(d.name, d.station, f"http://127.0.0.1:{port}",
                                          DEMO_OPERATOR, DEMO_PASSWORD))  # fmt: skip
            requests[d.name] = ring_deployment(
                ROOT / "plants" / "demo.yaml", ROOT / "releases" / "demo.json", "canary",
                configuration={
                    "com.lineguard.Inspector": {
                        "source": "camera", "imagesDir": str(frames_dir / d.station),
                        "fps": args.fps, "maxFrames": args.frames, "threads": 1,
                        "heartbeatIntervalS": 0.2, "healthIntervalS": 5,
                        "reviewStation": {"port": port, "operatorsFile": str(operators)},
                        # the published recipe names the account's bucket; the demo's is local
                        **({"sampleUploads": {"bucket": BUCKET}} if s3 is not None else {})},
                    "com.lineguard.LineBridge": {
                        "heartbeat_window_s": 1.0, "refresh_interval_s": 0.5,
                        "health_interval_s": 2.0,
                        "controller": {"protocol": "opcua", "endpoint": plc.endpoint,
                                       "timeout_s": 1.0},
                        "stations": {d.station: {"signals": plc.station_config(d.station)}}},
                },
            )  # fmt: skip
        results: dict[str, Any] = {}

        def deploy(device: Any) -> None:
            # The line bridge first, as a plant would roll it out: a reject published before
            # the bridge subscribed would reach no one (local pub/sub keeps nothing). The full
            # release then replaces that deployment; the unchanged bridge keeps running.
            request = requests[device.thing_name]
            bridge_only = {**request, "components": {
                n: c for n, c in request["components"].items()
                if n not in ("com.lineguard.Inspector", "com.lineguard.Model")}}  # fmt: skip
            first = device.deploy(bridge_only)
            if first.status != "SUCCESSFUL":
                results[device.thing_name] = first
                return
            station = next(d.station for d in devices if d.name == device.thing_name)
            deadline = time.monotonic() + 60
            while station not in plc.record.healthy and time.monotonic() < deadline:
                time.sleep(0.1)  # the bridge is subscribed once it writes to its PLC
            results[device.thing_name] = device.deploy(request)

        threads = [threading.Thread(target=deploy, args=(c,)) for c in core]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for device in core:
            result = results[device.thing_name]
            if result.status != "SUCCESSFUL":
                raise DemoError(
                    f"deployment to {device.thing_name}: {result.status} {result.message}; "
                    f"logs in {workdir / device.thing_name / 'logs'}"
                )
        steps.note(
            f"{len(core)} core devices: deployment SUCCESSFUL (Inspector, Model, LineBridge "
            "through their recipes on the nucleus stand-in)"
        )
        steps.note(
            "review stations: " + ", ".join(f"{s.station} {s.url}/" for s in stations)
            + f" (login, demo only: {DEMO_OPERATOR} / {DEMO_PASSWORD})"
        )  # fmt: skip
        review_thread = _start_review(args, stations, truth_of, out, review)
        total = sum(d.cameras for d in devices) * args.frames
        deadline = time.monotonic() + args.frames / args.fps + 180
        while len(cloud.upstream.results) < total:
            if time.monotonic() > deadline:
                raise DemoError(f"only {len(cloud.upstream.results)} of {total} results reached "
                                f"the cloud; logs in {workdir}/<device>/logs")  # fmt: skip
            time.sleep(5)
            steps.note(f"{len(cloud.upstream.results)} results upstream so far")
        results_up = list(cloud.upstream.results)
        acted = {(r["station"], r["part_id"]) for r in results_up
                 if r["decision"] in ("reject", "manual")}  # fmt: skip
        with contextlib.suppress(TimeoutError):  # a missed reject is reported, not raised
            wait_until(
                lambda: acted <= {(r.station, r.part_id) for r in plc.record.rejects},
                10, "every reject at the PLC",
            )  # fmt: skip
        plc_rejects = list(plc.record.rejects)
        latencies = []
        for reject in plc_rejects:
            msg = observed.get((reject.station, reject.part_id))
            if msg is not None:
                decided = parse_ts(msg["ts"], "result") + float(msg.get("latency_ms", 0)) / 1000.0
                latencies.append((reject.received - decided) * 1000.0)
        at_plc = {(r.station, r.part_id) for r in plc_rejects}
        if review_thread is not None:
            review_thread.join(timeout=120)
            turn = review.get("review_turn")
            if turn is not None:
                steps.note(f"review turn: {len(turn.verdicts)} verdicts through the page in "
                           f"{turn.seconds:.1f} s")  # fmt: skip
            # the last labels travel with the inspectors' last batches
            wanted = len(turn.verdicts) if turn is not None else 0
            try:
                wait_until(lambda: len(cloud.upstream.labels) >= wanted, 30, "labels upstream")
                if s3 is not None and wanted:  # a labelled image goes once its label is journaled
                    wait_until(lambda: _labelled_uploads(s3, plant.name) >= 1, 30,
                               "a labelled sample in S3")  # fmt: skip
            except TimeoutError as exc:  # recorded in the report's notes, and the demo goes on
                review["timeouts"] = [str(exc)]
        acked = cloud.acknowledger.acknowledged if cloud.acknowledger is not None else 0
        return {
            "transport": "Greengrass IPC on the nucleus stand-in → mosquitto (mutual TLS), "
            f"results acknowledged by the cloud ({acked} batches)",
            "results": results_up,
            "labels": list(cloud.upstream.labels),
            "stations": [
                {"device": s.device, "station": s.station, "url": s.url} for s in stations
            ],
            **review,
            "health": list(cloud.upstream.health),
            "upstream_bytes": dict(cloud.upstream.bytes_by_kind),
            "plc": {
                "seen": [
                    {"part_id": f"{r.station}/{r.part_id}", "ts": r.received} for r in plc_rejects
                ]
            },  # fmt: skip
            "plc_summary": {
                "expected": len(acted),
                "seen": len(at_plc & acted),
                "missed": len(acted - at_plc),
                "p50_ms": percentile(latencies, 0.5),
                "p99_ms": percentile(latencies, 0.99),
            },
        }
    finally:
        for device in core:
            device.stop()
        cloud.stop()
        plc_thread.stop()
        endpoint.__exit__(None, None, None)
        _keep_logs(roots, workdir)


def _labelled_uploads(s3: LocalS3, plant: str) -> int:
    """Objects under a labelled layout (``good``, ``defect[/type]``) in the local S3."""
    layouts = s3.uploaded(plant).layouts
    return sum(n for layout, n in layouts.items() if not layout.startswith("unlabelled"))


def _keep_logs(roots: Path, workdir: Path) -> None:
    """Keep each device's logs in ``workdir`` and remove the device roots under /tmp: they hold
    every component's venv and artifacts (about 800 MB a device), which nothing reads after the
    run, and a demo run must not leave them behind."""
    for link in workdir.iterdir():
        if link.is_symlink() and link.resolve().parent == roots.resolve():
            logs = link.resolve() / "logs"
            link.unlink()
            link.mkdir()
            if logs.is_dir():
                shutil.copytree(logs, link / "logs")
    shutil.rmtree(roots, ignore_errors=True)


def _line_over_files(
    args: argparse.Namespace,
    plant: Any,
    devices: Sequence[Any],
    frames_dir: Path,
    model_dir: Path,
    workdir: Path,
) -> dict[str, Any]:
    """Inspectors with the file transport (no broker): upstream publishes land in JSONL files."""
    from demo.local_line import child_env
    from inspector.transports.file import UPSTREAM_FILE, read_jsonl

    procs = []
    for d in devices:
        cmd = py("-m", "inspector", "run", "--transport", "file", "--out", str(workdir / d.name),
                 "--plant", plant.name, "--line", plant.lines[0].name, "--station", d.station,
                 "--device", d.name, "--images", str(frames_dir / d.station), "--source", "camera",
                 "--cameras", str(d.cameras), "--fps", str(args.fps), "--model", str(model_dir),
                 "--journal", str(workdir / f"{d.name}-journal.db"), "--threads", "1",
                 "--max-frames", str(args.frames), "--once")  # fmt: skip
        with (workdir / f"{d.name}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(cmd, env=child_env(), stdout=log, stderr=subprocess.STDOUT)
            )
    _wait_for(procs, [d.name for d in devices], args, workdir, lambda: None)
    seen: dict[str, Any] = {"transport": "file (JSONL)", "results": [], "health": [],
                            "upstream_bytes": {}, "plc": None, "plc_summary": None,
                            "review_skipped": "not run: the line ran without the nucleus "
                            "stand-in (no broker), so without review stations"}  # fmt: skip
    for d in devices:
        for line in read_jsonl(workdir / d.name / UPSTREAM_FILE):
            kind = line["topic"].rsplit("/", 1)[-1]
            size = len(json.dumps(line["payload"], separators=(",", ":")))
            seen["upstream_bytes"][kind] = seen["upstream_bytes"].get(kind, 0) + size
            if kind == "results":
                seen["results"].extend(line["payload"]["results"])
            elif kind == "health":
                seen["health"].append(line["payload"])
    return seen


def _collect(
    seen: dict[str, Any],
    devices: Sequence[Any],
    frames_dir: Path,
    truth: dict[str, dict[str, str]],
    model_dir: Path,
    out: Path,
) -> dict[str, Any]:
    """Everything the report and the summary need from one line run."""
    results = sorted(seen["results"], key=lambda r: (r["device"], r["seq"]))
    names = {station: sorted(files) for station, files in truth.items()}
    frame_files = [
        frames_dir / r["station"]
        / names[r["station"]][int(r["part_id"].rsplit("-", 1)[1]) % len(names[r["station"]])]
        for r in results
    ]  # fmt: skip
    decisions = dict(Counter(r["decision"] for r in results))
    rejects = [
        (r, f) for r, f in zip(results, frame_files, strict=True) if r["decision"] == "reject"
    ]
    maps = anomaly_maps(model_dir, rejects[:6], out / "maps")

    # part and camera ids are per device: the report names them by station to keep them apart
    def by_station(doc: dict[str, Any], station: str) -> dict[str, Any]:
        return {**doc, "camera": f"{station}/{doc['camera']}",
                "part_id": f"{station}/{doc['part_id']}"}  # fmt: skip

    upstream = seen["upstream_bytes"]
    return {
        **seen,
        "cameras": sum(d.cameras for d in devices),
        "results": results,
        "report_results": [by_station(r, r["station"]) for r in results],
        "frame_files": frame_files,
        "decisions": decisions,
        "anomaly_maps": [
            by_station(m, r["station"]) for (r, _), m in zip(rejects, maps, strict=False)
        ],
        "bytes": {
            "frames": len(results),
            "images_bytes": sum(p.stat().st_size for p in frame_files),
            "upstream": upstream,
            "upstream_total": sum(upstream.values()),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
