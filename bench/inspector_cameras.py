"""The most simulated cameras at 1 fps one inspector serves with frame → signalled p99 ≤ 100 ms.

    .venv/bin/python bench/inspector_cameras.py [--model <package dir> | --tiny] [--trial-s 8]

The model is the shipped production-size package (``edge_component/initial-model``: PatchCore on
EfficientNet-Lite0, 224×224) unless ``--model`` names another; ``--tiny`` (the 32×32 test model)
is for smoke tests only. Each trial runs the inspector service itself (``inspector.service``,
``Service.run``, file transport, a real journal) with N simulated cameras at ``--fps`` for
``--trial-s`` seconds: its own camera loop reads the frame files (640×480 JPEG), stamps each frame
when due, hands it to the ``--judge-threads`` judging workers, and commits verdicts in order on the
loop thread (journal transaction at ``synchronous=FULL``, the local reject message, health,
sampler) while the uplink thread and the heartbeat run. ``--camera-phase spread`` (the service's
default) spreads free-running cameras evenly over each period; ``together`` takes every camera's
frame at one trigger, a burst the cores share. A trial passes when every frame is committed, none
is fail-safe ``manual`` (the product's deadline stays on: a late frame is manual, never pass) and
p99 of capture → committed and signalled (``commit_p99_ms``) ≤ target; capture → decision
(``p99_ms``) is reported beside it.
N doubles until a trial fails, then a binary search narrows it (bounded by ``--max-cameras``
and ``--max-trials``); ``--cameras N`` runs one trial instead.

The same run measures single-thread inference (tensor → score, batch 1, one intra-op thread)
before every trial, so the figure ``ratio_of_limit = cameras / (cores × 1000 / inference_ms)``
compares the load served with what raw inference allows on this machine at the same time.
Prints JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge_component")]  # before site-packages' own `tests`

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from inspector.decision import MANUAL, MANUAL_BAND  # noqa: E402
from inspector.health import percentile  # noqa: E402
from inspector.runner import ModelRunner, RunnerOptions  # noqa: E402
from inspector.runtime_config import RuntimeConfig  # noqa: E402
from inspector.service import Service, parse_settings  # noqa: E402
from inspector.sources import Frame  # noqa: E402
from inspector.transports.file import FileTransport  # noqa: E402

PRODUCTION_MODEL = ROOT / "edge_component" / "initial-model"


def _frames(width: int, height: int, count: int = 8) -> list[bytes]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        small = rng.integers(60, 200, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def inference_ms(runner: ModelRunner, frame: bytes, runs: int = 40) -> float:
    """Median single-frame inference time (preprocessed tensor → score) on this thread."""
    tensor = runner.preprocess(Image.open(io.BytesIO(frame)))
    runner.score([tensor])
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.score([tensor])
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def trial(
    args: argparse.Namespace,
    package: Path,
    workdir: Path,
    cameras: int,
    *,
    frames: list[bytes],
) -> dict[str, Any]:
    """Run the inspector service itself (``Service.run``) with ``cameras`` simulated cameras.

    The service's own camera loop: ``--camera-phase`` cameras reading the frame files, each
    frame stamped when due and handed to the judging workers, verdicts committed in order on
    the loop thread (journal at ``synchronous=FULL``, local reject message, health, sampler),
    the uplink thread and the heartbeat running. A hook on the commit records capture →
    committed and signalled per frame.
    """
    images = workdir / "images"
    if not images.is_dir():
        images.mkdir(parents=True)
        for i, data in enumerate(frames):
            (images / f"frame-{i:02d}.jpg").write_bytes(data)
    run = workdir / f"trial-{cameras}-{time.monotonic_ns()}"
    settings = parse_settings(
        [
            "--transport", "file", "--out", str(run / "out"),
            "--plant", "bench", "--line", "line", "--station", "station",
            "--device", "bench-device", "--source", "camera", "--images", str(images),
            "--cameras", str(cameras), "--fps", str(args.fps),
            "--camera-phase", args.camera_phase,
            "--max-frames", str(max(1, round(args.fps * args.trial_s))),
            "--model", str(package), "--journal", str(run / "journal.db"),
            "--deadline-ms", str(args.deadline_ms), "--threads", str(args.threads),
            "--judge-threads", str(args.judge_threads), "--max-batch", str(args.max_batch),
            "--drain-timeout", "0",
        ]
    )  # fmt: skip
    svc = Service(settings, FileTransport(run / "out"))
    committed: list[tuple[float, dict[str, Any]]] = []
    commit = svc._commit

    def timed_commit(
        batch: list[Frame],
        cursors: list[tuple[str, str]],
        results: list[dict[str, Any]],
        *maps: Any,
    ) -> list[dict[str, Any]]:
        out = commit(batch, cursors, results, *maps)
        now = time.monotonic()
        committed.extend((now - f.captured, r) for f, r in zip(batch, results, strict=True))
        return out

    svc._commit = timed_commit  # type: ignore[method-assign,assignment]
    code = svc.run()
    svc.engine.close()
    latencies = [r["latency_ms"] for _, r in committed]
    commits = [age * 1000.0 for age, _ in committed]
    # fail-safe manual: deadline missed, model error (a score in the band is judged)
    unjudged = sum(
        1
        for _, r in committed
        if r["decision"] == MANUAL and not str(r.get("reason")).startswith(MANUAL_BAND)
    )
    return {
        "cameras": cameras,
        "frames": cameras * max(1, round(args.fps * args.trial_s)),
        "judged": len(committed),
        "exit_code": code,
        "p50_ms": round(percentile(latencies, 50) or 0.0, 2),
        "p99_ms": round(percentile(latencies, 99) or 0.0, 2),
        "commit_p50_ms": round(percentile(commits, 50) or 0.0, 2),
        "commit_p99_ms": round(percentile(commits, 99) or 0.0, 2),
        "unjudged": unjudged,
    }


def search(
    args: argparse.Namespace,
    package: Path,
    workdir: Path,
    frames: list[bytes],
    probe: ModelRunner,
) -> dict[str, Any]:
    """Doubling then bisection for the largest N with p99 ≤ target; bounded trial count."""
    trials: list[dict[str, Any]] = []

    def ok(n: int) -> bool:
        if len(trials) >= args.max_trials:
            raise StopIteration
        infer = inference_ms(probe, frames[0])
        result = trial(args, package, workdir, n, frames=frames)
        result["inference_ms_before"] = round(infer, 3)
        result["ok"] = (
            result["commit_p99_ms"] <= args.target_p99_ms
            and result["judged"] == result["frames"]
            and result["unjudged"] == 0
        )
        trials.append(result)
        print(json.dumps(result), file=sys.stderr)
        return bool(result["ok"])

    best, worst = 0, None
    try:
        if args.cameras is not None:
            best = args.cameras if ok(args.cameras) else 0
            worst = None if best else args.cameras
            raise StopIteration
        n = args.start
        while n <= args.max_cameras:
            if ok(n):
                best = n
                n *= 2
            else:
                worst = n
                break
        if worst is None and best < args.max_cameras:
            worst = args.max_cameras + 1
        while worst is not None and worst - best > max(1, best // 20):
            mid = (best + worst) // 2
            if ok(mid):
                best = mid
            else:
                worst = mid
    except StopIteration:
        pass
    return {"max_cameras": best, "first_failing": worst, "trials": trials}


def main(argv: list[str] | None = None) -> int:
    """Run the search and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=PRODUCTION_MODEL, help="a model package")
    parser.add_argument("--tiny", action="store_true", help="the 32×32 test model (smoke tests)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames per second per camera")
    parser.add_argument("--target-p99-ms", type=float, default=100.0)
    parser.add_argument("--deadline-ms", type=float, default=RuntimeConfig().deadline_ms)
    parser.add_argument("--trial-s", type=float, default=8.0, help="seconds per trial")
    cores = len(os.sched_getaffinity(0))
    parser.add_argument(
        "--judge-threads",
        type=int,
        default=min(4, cores),
        help="threads judging frames side by side (default: the service's, the cores, at most 4)",
    )
    parser.add_argument(
        "--camera-phase",
        choices=("spread", "together"),
        default="spread",
        help="free-running cameras spread over the period (default) or one trigger for all",
    )
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--start", type=int, default=4, help="cameras in the first trial")
    parser.add_argument("--cameras", type=int, help="run one trial with this many cameras")
    parser.add_argument("--max-cameras", type=int, default=1024)
    parser.add_argument("--max-trials", type=int, default=14)
    parser.add_argument("--frame", default="640x480", help="camera frame size WxH (JPEG)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.frame.lower().split("x"))
    frames = _frames(width, height)
    with tempfile.TemporaryDirectory() as tmp:
        package = args.model
        if args.tiny:
            from tests.support.tiny_model import build_tiny_package

            package = Path(tmp) / "tiny"
            build_tiny_package(package)
        elif not package.is_dir():
            print(f"error: model package {package} not found", file=sys.stderr)
            return 2
        runner = ModelRunner.load(package, RunnerOptions())  # the single-thread probe
        found = search(args, package, Path(tmp), frames, runner)
        after = inference_ms(runner, frames[0])
    infer = statistics.median([t["inference_ms_before"] for t in found["trials"]] + [after])
    limit = cores * 1000.0 / infer
    print(
        json.dumps(
            {
                "benchmark": "inspector_cameras",
                "model": runner.ref,
                "input": [runner.manifest.input.height, runner.manifest.input.width],
                "fps_per_camera": args.fps,
                "target_p99_ms": args.target_p99_ms,
                "deadline_ms": args.deadline_ms,
                "judge_threads": args.judge_threads,
                "camera_phase": args.camera_phase,
                "intra_op_threads": args.threads,
                "max_batch": args.max_batch,
                "batch_pays": runner.batch_pays,
                "frame": {"size": [width, height], "format": "JPEG"},
                "cores": cores,
                "single_thread_inference_ms": round(infer, 3),
                "inference_limit_fps": round(limit, 1),
                "ratio_of_limit": round(found["max_cameras"] * args.fps / limit, 3),
                "note": "one run, shared machine: inference measured before every trial and "
                "after the last; rerun on an idle machine for final figures",
                **found,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
