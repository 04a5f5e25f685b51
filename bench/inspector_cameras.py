"""The most simulated cameras at 1 fps one process serves with frame → signalled p99 ≤ 100 ms.

    .venv/bin/python bench/inspector_cameras.py [--model <package dir> | --tiny] [--trial-s 8]

The model is the shipped production-size package (``edge_component/initial-model``: PatchCore on
EfficientNet-Lite0, 224×224) unless ``--model`` names another; ``--tiny`` (the 32×32 test model)
is for smoke tests only. Each trial runs N cameras at ``--fps`` with random phases for
``--trial-s`` seconds through the inspector service's own camera path (``inspector.service``,
file transport, a real journal): each frame is stamped with the time it was due and handed to
``Service.submit``, so the next free of ``--judge-threads`` workers judges it, and the loop
commits verdicts in order as the service does (journal transaction at ``synchronous=FULL``, the
local reject message, health, sampler). A trial passes when every frame is committed, none is
fail-safe ``manual`` (the product's deadline stays on: a late frame is manual, never pass) and
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
import heapq
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
    svc: Service,
    cameras: int,
    *,
    fps: float,
    seconds: float,
    frames: list[bytes],
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``cameras`` cameras for ``seconds`` through the service's camera path.

    Each frame is stamped with the time it was due (its capture), handed to
    ``Service.submit`` (the judging workers; the loop waits when ``4 × judge_threads`` units
    wait), and this thread commits verdicts in order as the service's loop does
    (``Service._commit_judged``: journal transaction, local reject message, health, sampler).
    ``latency_ms`` is capture → decision; ``commit_ms`` capture → committed and signalled.
    """
    rng = np.random.default_rng(seed + cameras)
    start = time.monotonic() + 0.05
    due = [(start + float(rng.uniform(0, 1 / fps)), cam, 0) for cam in range(cameras)]
    heapq.heapify(due)
    committed: list[tuple[float, dict[str, Any]]] = []
    commit = svc._commit

    def timed_commit(
        frames: list[Frame], cursors: list[tuple[str, str]], results: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        out = commit(frames, cursors, results)
        now = time.monotonic()
        committed.extend((now - f.captured, r) for f, r in zip(frames, results, strict=True))
        return out

    svc._commit = timed_commit  # type: ignore[method-assign]
    end = start + seconds
    produced = 0
    try:
        while due:  # the camera loop: commit what is judged, hand each frame over when due
            when, cam, number = heapq.heappop(due)
            if when >= end:
                break
            while (wait := when - time.monotonic()) > 0:
                if svc._judged.wait(wait):
                    svc._judged.clear()
                svc._commit_judged()
            data = frames[(cam + number) % len(frames)]
            frame = Frame(f"cam-{cam}", f"cam-{cam}-{number}", data=data, captured=when)
            svc.submit([frame], [(f"camera:cam-{cam}", str(number))])
            produced += 1
            heapq.heappush(due, (when + 1 / fps, cam, number + 1))
        svc._commit_judged(everything=True)
    finally:
        svc._commit = commit  # type: ignore[method-assign]
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
        "frames": produced,
        "judged": len(committed),
        "p50_ms": round(percentile(latencies, 50) or 0.0, 2),
        "p99_ms": round(percentile(latencies, 99) or 0.0, 2),
        "commit_p50_ms": round(percentile(commits, 50) or 0.0, 2),
        "commit_p99_ms": round(percentile(commits, 99) or 0.0, 2),
        "unjudged": unjudged,
    }


def search(
    args: argparse.Namespace,
    svc: Service,
    frames: list[bytes],
    probe: ModelRunner,
) -> dict[str, Any]:
    """Doubling then bisection for the largest N with p99 ≤ target; bounded trial count."""
    trials: list[dict[str, Any]] = []

    def ok(n: int) -> bool:
        if len(trials) >= args.max_trials:
            raise StopIteration
        infer = inference_ms(probe, frames[0])
        result = trial(svc, n, fps=args.fps, seconds=args.trial_s, frames=frames)
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
        "--judge-threads", type=int, default=cores, help="threads judging one batch"
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
        images = Path(tmp) / "images"
        images.mkdir()
        (images / "frame.jpg").write_bytes(frames[0])
        settings = parse_settings(
            [
                "--transport", "file", "--out", str(Path(tmp) / "out"),
                "--plant", "bench", "--line", "line", "--station", "station",
                "--device", "bench-device", "--source", "camera", "--images", str(images),
                "--model", str(package), "--journal", str(Path(tmp) / "journal.db"),
                "--deadline-ms", str(args.deadline_ms), "--threads", str(args.threads),
                "--judge-threads", str(args.judge_threads), "--max-batch", str(args.max_batch),
            ]
        )  # fmt: skip
        svc = Service(settings, FileTransport(Path(tmp) / "out"))
        runner = svc.engine.runner
        if runner is None:
            print(f"error: model package {package} did not load", file=sys.stderr)
            return 2
        probe = runner if args.threads == 1 else ModelRunner.load(package, RunnerOptions())
        try:
            found = search(args, svc, frames, probe)
            after = inference_ms(probe, frames[0])
        finally:
            svc.engine.close()
            svc.journal.close()
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
