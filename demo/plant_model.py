"""The plant-scale argument, measured then modelled.

From three measured figures (image size, inference latency, result message size) this module
simulates N machines, each taking 1 image/s, that share one plant uplink of U bit/s, in two
architectures:

* **cloud inference** - every image goes up the shared uplink (one FIFO queue, first come first
  served), then the cloud infers it and sends the result back: decision latency = queueing +
  transmission + round trip + cloud inference + result transmission.
* **edge inference** - each machine's core device infers locally (a FIFO queue per device) and only
  the result message goes up the shared uplink: decision latency = local queueing + inference.

It is a discrete-event simulation of FIFO single-server queues. Arrivals are event times; the
departure of every event follows Lindley's recursion ``d[i] = max(a[i], d[i-1]) + s[i]``, which is
computed in closed form with a running maximum (``simulate_fifo``), so a whole sweep of 5,000
machines over 60 s of plant time runs in well under a second. ``simulate_fifo_events`` is the same
queue written as a plain heapq event loop; the tests check that both agree.

The cloud path saturates when the offered uplink load ``N * rate * image_bits / U`` reaches 1:
past that the queue, and with it the decision latency, grows without bound (in a finite window it
grows with the window's length, which the result marks as ``bounded: false``).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

DEFAULT_UPLINKS_BPS: tuple[float, ...] = (100e6, 1e9)
Z99 = 2.3263478740408408  # standard normal quantile of 0.99


class PlantModelError(ValueError):
    """Invalid input to the plant-scale model."""


@dataclass(frozen=True)
class Measured:
    """The measured figures the model starts from."""

    image_bytes: float
    latency_ms: tuple[float, ...]  # samples of edge inference latency (ms)
    result_bytes: float
    source: str = "measured"

    def __post_init__(self) -> None:
        if not self.image_bytes > 0:
            raise PlantModelError(f"image_bytes must be > 0, got {self.image_bytes}")
        if not self.result_bytes > 0:
            raise PlantModelError(f"result_bytes must be > 0, got {self.result_bytes}")
        if not self.latency_ms:
            raise PlantModelError("latency_ms needs at least one sample")
        if min(self.latency_ms) < 0 or not all(math.isfinite(x) for x in self.latency_ms):
            raise PlantModelError("latency_ms samples must be finite and >= 0")


@dataclass(frozen=True)
class Assumptions:
    """What the model assumes beyond the measured figures (all documented in the output)."""

    frame_rate_hz: float = 1.0  # images per second per machine
    window_s: float = 60.0  # plant time simulated per point
    rtt_ms: float = 20.0  # plant <-> cloud region round trip
    protocol_overhead: float = 1.0  # bytes on the wire / payload bytes (TLS, HTTP, TCP framing)
    cloud_speedup: float = 1.0  # cloud inference latency = edge latency / cloud_speedup
    deadline_ms: float = 500.0  # decision deadline used to state where cloud p99 misses it
    seed: int = 7

    def __post_init__(self) -> None:
        for name in ("frame_rate_hz", "window_s", "protocol_overhead", "cloud_speedup"):
            if not getattr(self, name) > 0:
                raise PlantModelError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.rtt_ms < 0 or self.deadline_ms <= 0:
            raise PlantModelError("rtt_ms must be >= 0 and deadline_ms > 0")


@dataclass
class PathResult:
    """One architecture at one (N, U) point."""

    path: str
    machines: int
    uplink_bps: float
    frames: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    offered_utilisation: float  # offered uplink load / capacity; >= 1 means saturated
    utilisation: float  # measured busy fraction of the uplink over the window
    backlog_s: float  # uplink work left when the window ends (s)
    bounded: bool  # False when the latency only grows with the simulated window
    extra: dict[str, float] = field(default_factory=dict)


def latency_from_percentiles(
    p50_ms: float, p99_ms: float | None = None, *, n: int = 20_000, seed: int = 0
) -> tuple[float, ...]:
    """Samples of a lognormal latency with the given p50 (and p99; a 1.5x tail if absent)."""
    if not p50_ms > 0:
        raise PlantModelError(f"latency p50 must be > 0 ms, got {p50_ms}")
    p99 = p99_ms if p99_ms is not None else 1.5 * p50_ms
    if p99 < p50_ms:
        raise PlantModelError(f"latency p99 ({p99} ms) is below p50 ({p50_ms} ms)")
    sigma = (math.log(p99) - math.log(p50_ms)) / Z99
    rng = np.random.default_rng(seed)
    samples = rng.lognormal(math.log(p50_ms), sigma, size=n) if sigma > 0 else np.full(n, p50_ms)
    return tuple(float(x) for x in samples)


def measured_from_run(
    results: Sequence[dict[str, Any]], image_paths: Sequence[Path | str]
) -> Measured:
    """The model's inputs from a real run: result messages (JSON as sent) and the images judged."""
    latencies = tuple(float(r["latency_ms"]) for r in results if r.get("latency_ms") is not None)
    if not latencies:
        raise PlantModelError("no result with latency_ms to measure inference latency from")
    if not image_paths:
        raise PlantModelError("no image files to measure the image size from")
    sizes = [Path(p).stat().st_size for p in image_paths]
    encoded = [len(json.dumps(r, separators=(",", ":")).encode()) for r in results]
    return Measured(
        image_bytes=float(np.mean(sizes)),
        latency_ms=latencies,
        result_bytes=float(np.mean(encoded)),
        source=f"{len(latencies)} frames of the demo run",
    )


def simulate_fifo(arrivals: np.ndarray, service: np.ndarray, axis: int = -1) -> np.ndarray:
    """Departure times of a FIFO single-server queue (Lindley's recursion, vectorised).

    ``arrivals`` must be sorted along ``axis``; ``service`` holds each job's service time. With
    ``S`` the running sum of service times, ``d[i] = S[i] + max_{j<=i}(a[j] - S[j-1])``.
    """
    total = np.cumsum(service, axis=axis)
    before = total - service
    return total + np.maximum.accumulate(arrivals - before, axis=axis)


def simulate_fifo_events(arrivals: Sequence[float], service: Sequence[float]) -> list[float]:
    """Departure times of the same FIFO queue, as a plain discrete-event loop (reference)."""
    events: list[tuple[float, int, int]] = []  # (time, kind 0=departure 1=arrival, job)
    for job, t in enumerate(arrivals):
        heapq.heappush(events, (float(t), 1, job))
    waiting: list[int] = []
    busy = False
    departures = [0.0] * len(arrivals)
    while events:
        now, kind, job = heapq.heappop(events)
        if kind == 1:
            waiting.append(job)
        else:
            departures[job] = now
            busy = False
        if not busy and waiting:
            nxt = waiting.pop(0)
            busy = True
            heapq.heappush(events, (now + float(service[nxt]), 0, nxt))
    return departures


def _frame_times(machines: int, a: Assumptions, rng: np.random.Generator) -> np.ndarray:
    """Frame arrival times, shape (machines, frames): 1/rate apart with a random phase each."""
    period = 1.0 / a.frame_rate_hz
    frames = max(1, int(round(a.window_s * a.frame_rate_hz)))
    phase = rng.uniform(0.0, period, size=(machines, 1))
    return phase + period * np.arange(frames)[None, :]


def _busy_fraction(departures: np.ndarray, service: np.ndarray, window_s: float) -> float:
    """Fraction of [0, window] the server was busy."""
    start = departures - service
    busy = np.clip(np.minimum(departures, window_s) - start, 0.0, None)
    return float(busy.sum() / window_s)


def _percentiles(latency_s: np.ndarray) -> tuple[float, float, float]:
    p50, p99 = np.percentile(latency_s, [50, 99])
    return float(p50 * 1e3), float(p99 * 1e3), float(latency_s.max() * 1e3)


def simulate_cloud(
    machines: int, uplink_bps: float, measured: Measured, a: Assumptions, rng: np.random.Generator
) -> PathResult:
    """Cloud inference: every image up the shared uplink (FIFO), infer, result back."""
    frames = _frame_times(machines, a, rng).ravel()
    frames.sort()
    upload_s = measured.image_bytes * 8 * a.protocol_overhead / uplink_bps
    service = np.full(frames.shape, upload_s)
    sent = simulate_fifo(frames, service)
    lat = np.asarray(measured.latency_ms) / 1e3 / a.cloud_speedup
    infer = rng.choice(lat, size=frames.shape)
    result_s = measured.result_bytes * 8 * a.protocol_overhead / uplink_bps  # downlink, uncongested
    decided = sent + a.rtt_ms / 1e3 + infer + result_s
    p50, p99, worst = _percentiles(decided - frames)
    offered = machines * a.frame_rate_hz * upload_s
    backlog = max(0.0, float(sent[-1]) - a.window_s)
    # measured, not derived from the load: the window ends with a queue that keeps on growing
    growing = backlog > max(0.25, 20 * upload_s)
    bounded = offered < 1.0 and not growing
    return PathResult(
        path="cloud",
        machines=machines,
        uplink_bps=uplink_bps,
        frames=int(frames.size),
        p50_ms=p50,
        p99_ms=p99,
        max_ms=worst,
        offered_utilisation=offered,
        utilisation=_busy_fraction(sent, service, a.window_s),
        backlog_s=backlog,
        bounded=bounded,
        extra={"upload_ms_per_image": upload_s * 1e3, "queue_growing": float(growing)},
    )


def simulate_edge(
    machines: int, uplink_bps: float, measured: Measured, a: Assumptions, rng: np.random.Generator
) -> PathResult:
    """Edge inference: a FIFO queue per core device, only results up the shared uplink."""
    frames = _frame_times(machines, a, rng)
    infer = rng.choice(np.asarray(measured.latency_ms) / 1e3, size=frames.shape)
    decided = simulate_fifo(frames, infer, axis=1)  # one queue per device
    p50, p99, worst = _percentiles(decided - frames)
    ready = decided.ravel()
    ready.sort()
    upload_s = measured.result_bytes * 8 * a.protocol_overhead / uplink_bps
    service = np.full(ready.shape, upload_s)
    sent = simulate_fifo(ready, service)
    offered = machines * a.frame_rate_hz * upload_s
    device_load = float(np.mean(measured.latency_ms)) / 1e3 * a.frame_rate_hz
    up_lat = sent - ready
    return PathResult(
        path="edge",
        machines=machines,
        uplink_bps=uplink_bps,
        frames=int(frames.size),
        p50_ms=p50,
        p99_ms=p99,
        max_ms=worst,
        offered_utilisation=offered,
        utilisation=_busy_fraction(sent, service, a.window_s),
        backlog_s=max(0.0, float(sent[-1]) - a.window_s),
        bounded=offered < 1.0 and device_load < 1.0,
        extra={
            "device_utilisation": device_load,
            "result_upstream_p99_ms": float(np.percentile(up_lat, 99) * 1e3),
        },
    )


def saturation_machines(measured: Measured, uplink_bps: float, a: Assumptions) -> float:
    """Analytical N where the cloud path's offered uplink load reaches 1."""
    return uplink_bps / (measured.image_bytes * 8 * a.protocol_overhead * a.frame_rate_hz)


def default_machines(measured: Measured, uplinks_bps: Sequence[float], a: Assumptions) -> list[int]:
    """A log grid from 10 to 5,000 machines, refined on both sides of each saturation point."""
    grid = {int(x) for x in np.unique(np.round(np.geomspace(10, 5000, 25)))}
    for u in uplinks_bps:
        n_sat = saturation_machines(measured, u, a)
        for f in (0.8, 0.9, 0.95, 0.99, 1.01, 1.05, 1.2):
            n = int(round(n_sat * f))
            if 10 <= n <= 5000:
                grid.add(n)
    return sorted(grid)


def run_sweep(
    measured: Measured,
    assumptions: Assumptions | None = None,
    *,
    uplinks_bps: Sequence[float] = DEFAULT_UPLINKS_BPS,
    machines: Sequence[int] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Simulate both paths for every (N, U); returns a JSON-ready dict with the saturation points."""
    a = assumptions or Assumptions()
    grid = list(machines) if machines is not None else default_machines(measured, uplinks_bps, a)
    if not grid or min(grid) < 1:
        raise PlantModelError("machines must be a non-empty list of positive integers")
    lat = np.asarray(measured.latency_ms)
    started = time.perf_counter()
    uplinks = []
    for u in uplinks_bps:
        if not u > 0:
            raise PlantModelError(f"uplink must be > 0 bit/s, got {u}")
        points = []
        for i, n in enumerate(grid):
            rng = np.random.default_rng([a.seed, int(u), n])
            cloud = simulate_cloud(n, u, measured, a, rng)
            edge = simulate_edge(n, u, measured, a, rng)
            points.append({"machines": n, "cloud": asdict(cloud), "edge": asdict(edge)})
            if progress is not None and (i == len(grid) - 1 or i % 10 == 9):
                progress(f"uplink {u / 1e6:g} Mbps: {i + 1}/{len(grid)} points")
        uplinks.append(_summarise(u, points, measured, a))
    out: dict[str, Any] = {
        "v": 1,
        "measured": {
            "image_bytes": measured.image_bytes,
            "result_bytes": measured.result_bytes,
            "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)),
            "latency_samples": int(lat.size),
            "source": measured.source,
        },
        "assumptions": asdict(a),
        "machines": grid,
        "uplinks": uplinks,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    out["statement"] = saturation_statement(out)
    return out


def _summarise(
    uplink_bps: float, points: list[dict[str, Any]], m: Measured, a: Assumptions
) -> dict[str, Any]:
    """Per-uplink summary: analytic and simulated saturation, deadline miss, edge load at max N."""
    n_sat = saturation_machines(m, uplink_bps, a)
    saturated = [p["machines"] for p in points if p["cloud"]["extra"]["queue_growing"]]
    over_deadline = [p["machines"] for p in points if p["cloud"]["p99_ms"] > a.deadline_ms]
    edge_over = [p["machines"] for p in points if p["edge"]["p99_ms"] > a.deadline_ms]
    last = points[-1]
    return {
        "uplink_bps": uplink_bps,
        "uplink_mbps": uplink_bps / 1e6,
        "cloud_saturation_machines_analytic": n_sat,
        "cloud_saturation_machines_simulated": min(saturated) if saturated else None,
        "cloud_p99_over_deadline_from": min(over_deadline) if over_deadline else None,
        "edge_p99_over_deadline_from": min(edge_over) if edge_over else None,
        "edge_utilisation_at_max": last["edge"]["utilisation"],
        "edge_offered_utilisation_at_max": last["edge"]["offered_utilisation"],
        "edge_saturation_machines_analytic": uplink_bps
        / (m.result_bytes * 8 * a.protocol_overhead * a.frame_rate_hz),
        "points": points,
    }


def saturation_statement(model: dict[str, Any]) -> str:
    """One paragraph, in words, of where the cloud path saturates and what edge uses instead."""
    m, a = model["measured"], model["assumptions"]
    per_machine = m["image_bytes"] * 8 * a["protocol_overhead"] * a["frame_rate_hz"] / 1e6
    parts = [
        f"Each machine sends {per_machine:.2f} Mbit/s of images at {a['frame_rate_hz']:g} image/s "
        f"({m['image_bytes'] / 1e3:.0f} kB per image)."
    ]
    max_n = max(model["machines"])
    for u in model["uplinks"]:
        deadline = u["cloud_p99_over_deadline_from"]
        sim = u["cloud_saturation_machines_simulated"]
        text = (
            f"On a {u['uplink_mbps']:g} Mbps uplink the cloud path saturates at "
            f"{u['cloud_saturation_machines_analytic']:.0f} machines (utilisation reaches 1; "
            + (
                f"the simulation's queue grows without bound from {sim} machines"
                if sim is not None
                else f"not reached up to {max_n} machines"
            )
            + ")"
        )
        if deadline is not None:
            text += f", and its p99 decision latency passes {a['deadline_ms']:g} ms from {deadline} machines"
        text += (
            f"; edge inference sends only results and uses {u['edge_utilisation_at_max']:.1%} of "
            f"it at {max_n:,} machines."
        )
        parts.append(text)
    return " ".join(parts)


def _series(u: dict[str, Any], path: str, key: str) -> np.ndarray:
    return np.array([p[path][key] for p in u["points"]], dtype=float)


def _machines(u: dict[str, Any]) -> np.ndarray:
    return np.array([p["machines"] for p in u["points"]])


def _log_log_axes() -> tuple[Any, Any, Any]:
    """(pyplot, figure, axes) for a log-log plot against the number of machines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=110)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("machines sharing the uplink (1 image/s each)")
    return plt, fig, ax


def _save(
    plt: Any, fig: Any, ax: Any, title: str, target: Path | str | IO[bytes], ncol: int
) -> None:
    ax.set_title(title)
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, ncol=ncol)
    fig.tight_layout()
    fig.savefig(target, format="png")
    plt.close(fig)


def plot_latency(model: dict[str, Any], target: Path | str | IO[bytes]) -> None:
    """Plot p50/p99 frame-to-decision latency against N, cloud and edge, for every uplink."""
    plt, fig, ax = _log_log_axes()
    colours = ["tab:red", "tab:purple", "tab:brown", "tab:pink"]
    for i, u in enumerate(model["uplinks"]):
        n = _machines(u)
        c = colours[i % len(colours)]
        label = f"cloud, {u['uplink_mbps']:g} Mbps"
        ax.plot(n, _series(u, "cloud", "p99_ms"), "-", color=c, label=label + " p99")
        ax.plot(n, _series(u, "cloud", "p50_ms"), ":", color=c, label=label + " p50")
        ax.axvline(u["cloud_saturation_machines_analytic"], color=c, lw=0.8, ls="--", alpha=0.6)
    u0 = model["uplinks"][0]
    n0 = _machines(u0)
    ax.plot(n0, _series(u0, "edge", "p99_ms"), "-", color="tab:green", label="edge p99")
    ax.plot(n0, _series(u0, "edge", "p50_ms"), ":", color="tab:green", label="edge p50")
    ax.axhline(model["assumptions"]["deadline_ms"], color="grey", lw=0.8, ls="-.")
    ax.text(n0[0], model["assumptions"]["deadline_ms"] * 1.1, "deadline", color="grey", fontsize=8)
    ax.set_ylabel("frame → decision latency (ms)")
    window = model["assumptions"]["window_s"]
    title = f"Decision latency (dashed: saturation; past it, bounded only by the {window:g} s run)"
    _save(plt, fig, ax, title, target, ncol=2)


def plot_utilisation(model: dict[str, Any], target: Path | str | IO[bytes]) -> None:
    """Plot offered uplink utilisation against N, cloud and edge, for every uplink."""
    plt, fig, ax = _log_log_axes()
    styles = ["-", "--", "-.", ":"]
    for i, u in enumerate(model["uplinks"]):
        n = _machines(u)
        s = styles[i % len(styles)]
        lbl = f"{u['uplink_mbps']:g} Mbps"
        ax.plot(n, _series(u, "cloud", "offered_utilisation"), s, color="tab:red",
                label=f"cloud (images), {lbl}")  # fmt: skip
        ax.plot(n, _series(u, "edge", "offered_utilisation"), s, color="tab:green",
                label=f"edge (results), {lbl}")  # fmt: skip
    ax.axhline(1.0, color="black", lw=1)
    ax.text(10, 1.15, "uplink full", fontsize=8)
    ax.set_ylabel("offered uplink utilisation")
    title = "Uplink utilisation: sending every image against sending results"
    _save(plt, fig, ax, title, target, ncol=1)


def _read_samples(path: Path) -> tuple[float, ...]:
    """Latency samples from a JSON list or a text file with one number per line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlantModelError(f"cannot read latency samples {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
        values = data if isinstance(data, list) else data["latency_ms"]
        return tuple(float(x) for x in values)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        pass
    try:
        return tuple(float(line) for line in text.split() if line.strip())
    except ValueError as exc:
        raise PlantModelError(f"{path}: not a JSON list nor one number per line") from exc


def _parse_latency(text: str) -> tuple[float, float | None]:
    parts = [p for p in text.split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise PlantModelError(f"--latency-ms must be P50 or P50,P99 in ms, got {text!r}") from exc
    if len(values) not in (1, 2):
        raise PlantModelError(f"--latency-ms must be P50 or P50,P99 in ms, got {text!r}")
    return values[0], values[1] if len(values) == 2 else None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: run the sweep from measured figures, write JSON (and plots)."""
    p = argparse.ArgumentParser(
        prog="python -m demo.plant_model",
        description="Model N machines at 1 image/s sharing an uplink: cloud against edge inference.",
    )
    p.add_argument("--image-bytes", type=float, required=True, help="measured image size (bytes)")
    lat = p.add_mutually_exclusive_group(required=True)
    lat.add_argument("--latency-ms", help="measured inference latency: P50 or P50,P99 (ms)")
    lat.add_argument("--latency-samples", type=Path, help="JSON list / one-per-line samples (ms)")
    p.add_argument("--result-bytes", type=float, required=True, help="result message size (bytes)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--plots-dir", type=Path, help="also write plant_latency.png, plant_uplink.png")
    p.add_argument("--uplink-mbps", type=float, nargs="+", default=[100.0, 1000.0])
    p.add_argument("--machines", type=int, nargs="+", help="N values (default 10..5000 log grid)")
    p.add_argument("--window-s", type=float, default=Assumptions.window_s)
    p.add_argument("--rtt-ms", type=float, default=Assumptions.rtt_ms)
    p.add_argument("--overhead", type=float, default=Assumptions.protocol_overhead,
                   help="wire bytes per payload byte (default %(default)s)")  # fmt: skip
    p.add_argument("--cloud-speedup", type=float, default=Assumptions.cloud_speedup)
    p.add_argument("--deadline-ms", type=float, default=Assumptions.deadline_ms)
    p.add_argument("--seed", type=int, default=Assumptions.seed)
    args = p.parse_args(argv)
    try:
        if args.latency_samples is not None:
            samples = _read_samples(args.latency_samples)
            source = f"samples from {args.latency_samples}"
        else:
            p50, p99 = _parse_latency(args.latency_ms)
            samples = latency_from_percentiles(p50, p99, seed=args.seed)
            source = f"lognormal fitted to p50={p50:g} ms" + (f", p99={p99:g} ms" if p99 else "")
        measured = Measured(args.image_bytes, samples, args.result_bytes, source=source)
        assumptions = Assumptions(
            window_s=args.window_s,
            rtt_ms=args.rtt_ms,
            protocol_overhead=args.overhead,
            cloud_speedup=args.cloud_speedup,
            deadline_ms=args.deadline_ms,
            seed=args.seed,
        )
        model = run_sweep(
            measured,
            assumptions,
            uplinks_bps=[u * 1e6 for u in args.uplink_mbps],
            machines=args.machines,
            progress=lambda msg: print(f"plant model: {msg}", file=sys.stderr),
        )
    except PlantModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(model, indent=1) + "\n")
        if args.plots_dir is not None:
            args.plots_dir.mkdir(parents=True, exist_ok=True)
            plot_latency(model, args.plots_dir / "plant_latency.png")
            plot_utilisation(model, args.plots_dir / "plant_uplink.png")
    except OSError as exc:
        print(f"error: cannot write output: {exc}", file=sys.stderr)
        return 1
    print(model["statement"])
    print(f"wrote {args.out} ({model['elapsed_s']:.2f} s of simulation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
