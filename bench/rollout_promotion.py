"""Rollout benchmarks on the fleet simulator; prints JSON.

1. Gates: for each plant (demo at its own 2 devices, example-large at ``--large-devices``), each
   baseline reject rate (``--rates``) and ``--seeds`` seeds per scenario, one whole promotion:
   - ``good``: the false-rollback share (target <= 1 %), the inconclusive share (the promotion
     paused for a person), the completed share;
   - ``reject-none``, ``reject-all``, ``crash``, ``slow``, ``manual-heavy``: the detection share
     (rolled back everywhere; target >= 99 %), the share stopped at the first ring, the share
     stopped in the shadow phase (the candidate decided no part), the inconclusive share;
   - the controller's wall time per simulated hour (the simulator's own time taken out).
2. Scale: one good promotion over ``--devices`` devices: wall time against simulated time.

    .venv/bin/python bench/rollout_promotion.py                 # 200 seeds: about 20 min on 2 cores
    .venv/bin/python bench/rollout_promotion.py --seeds 20 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BAD = ("reject-none", "reject-all", "crash", "slow", "manual-heavy")
FALSE_ROLLBACK_TARGET = 0.01
DETECTION_TARGET = 0.99
_PACKAGE: dict[str, Any] = {}


def _one(
    plant_name: str,
    scenario: str,
    seed: int,
    devices: int,
    package: Any,
    reject_rate: float = 0.03,
) -> dict[str, Any]:
    from rollout.controller import Controller
    from rollout.fleet import MODEL_COMPONENT
    from rollout.simulator import ModelBehaviour, simulated_fleet
    from stacks.config import load_plant, load_plant_release

    plant = load_plant(ROOT / "plants" / f"{plant_name}.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        releases = Path(tmp) / "releases"
        shutil.copytree(ROOT / "releases", releases)
        before = load_plant_release(plant, releases)
        sim = simulated_fleet(
            plant,
            before,
            new_version=package.manifest.version,
            scenario=scenario,
            devices=devices,
            seed=seed,
            base=ModelBehaviour(reject_rate=reject_rate),
        )
        controller = Controller(
            plant=plant,
            fleet=sim,
            clock=sim.clock,
            releases_dir=releases,
            state_dir=Path(tmp) / "state",
            log=lambda _m: None,
        )
        spent = {"simulator": 0.0}

        def timed(fn: Any) -> Any:
            def wrapper(*a: Any, **kw: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    spent["simulator"] += time.perf_counter() - start

            return wrapper

        sim.clock._on_advance = timed(sim.clock._on_advance)  # type: ignore[method-assign]
        for name in (
            "ring_health",
            "deployment_progress",
            "create_deployment",
            "core_devices",
            "ring_members",
            "decision_counts",
            "shadow_counts",
            "publish_shadow",
            "installed_components",
        ):
            setattr(sim, name, timed(getattr(sim, name)))
        t0, wall0 = sim.clock.now(), time.perf_counter()
        report = controller.promote(package)
        wall = time.perf_counter() - wall0
        after = load_plant_release(plant, releases)
        targets = [req["targetArn"] for name, req in sim.calls if name == "create_deployment"]
        new_rings = sorted(set(targets) - {plant.ring_group_arn(plant.ring_names[0])})
        on_previous = all(
            after.rings[r].components[MODEL_COMPONENT]
            == before.rings[r].components[MODEL_COMPONENT]
            for r in plant.ring_names
        ) and all(
            d.model() == before.rings[d.ring].components[MODEL_COMPONENT]
            for d in sim.devices.values()
        )
        return {
            # rolled back in the first ring's shadow phase: before the candidate decided a part
            # (a shadow that passed or could not decide handed over to the bake)
            "stopped_in_shadow": report.status == "rolled-back"
            and bool(report.rings.get(plant.ring_names[0], {}).get("shadow"))
            and report.rings[plant.ring_names[0]]["shadow"].get("phase")
            not in ("passed", "undecided"),
            "status": report.status,
            "gate": report.failed[0].gate if report.failed else None,
            "stopped_at_canary": report.status == "rolled-back"
            and {g.ring for g in report.failed} == {plant.ring_names[0]}
            and not new_rings,
            "rolled_back_everywhere": on_previous,
            "wall_s": wall,
            "simulator_wall_s": spent["simulator"],
            "simulated_s": sim.clock.now() - t0,
            "devices": len(sim.devices),
            "rings": len(plant.rings),
        }


def _job(args: tuple[str, str, int, int, float, str]) -> dict[str, Any]:
    plant, scenario, seed, devices, rate, package_dir = args
    if package_dir not in _PACKAGE:
        from inspector.model_package import load_package

        _PACKAGE[package_dir] = load_package(Path(package_dir))
    run = _one(plant, scenario, seed, devices, _PACKAGE[package_dir], rate)
    run.update(plant=plant, scenario=scenario, seed=seed, rate=rate)
    return run


def _share(runs: list[dict[str, Any]], test: Any) -> float:
    return round(sum(1 for r in runs if test(r)) / len(runs), 4) if runs else 0.0


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per plant and baseline rate, per scenario: the shares the targets are about."""
    out: dict[str, Any] = {}
    for run in runs:
        out.setdefault(run["plant"], {}).setdefault(f"{run['rate']:.3f}", {}).setdefault(
            run["scenario"], []
        ).append(run)
    summary: dict[str, Any] = {}
    for plant, rates in out.items():
        for rate, scenarios in rates.items():
            entry: dict[str, Any] = {}
            for scenario, rs in sorted(scenarios.items()):
                gates: dict[str, int] = {}
                for r in rs:
                    if r["gate"]:
                        gates[r["gate"]] = gates.get(r["gate"], 0) + 1
                figures: dict[str, Any] = {"runs": len(rs)}
                if scenario == "good":
                    figures["false_rollback"] = _share(rs, lambda r: r["status"] == "rolled-back")
                    figures["inconclusive"] = _share(rs, lambda r: r["status"] == "inconclusive")
                    figures["completed"] = _share(rs, lambda r: r["status"] == "completed")
                else:
                    figures["detected"] = _share(
                        rs, lambda r: r["status"] == "rolled-back" and r["rolled_back_everywhere"]
                    )
                    figures["stopped_at_first_ring"] = _share(rs, lambda r: r["stopped_at_canary"])
                    figures["stopped_in_shadow_phase"] = _share(
                        rs, lambda r: r["stopped_in_shadow"]
                    )
                    figures["inconclusive"] = _share(rs, lambda r: r["status"] == "inconclusive")
                figures["gates"] = gates
                hours = sum(r["simulated_s"] for r in rs) / 3600
                controller = sum(r["wall_s"] - r["simulator_wall_s"] for r in rs)
                figures["controller_wall_s_per_simulated_hour"] = round(controller / hours, 5)
                figures["mean_simulated_hours"] = round(hours / len(rs), 2)
                entry[scenario] = figures
            summary.setdefault(plant, {})[rate] = entry
    return summary


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """The worst figures over every plant and rate, against the targets."""
    worst_false = max(
        e["good"]["false_rollback"] for rates in summary.values() for e in rates.values()
    )
    worst_detect = min(
        e[s]["detected"]
        for rates in summary.values()
        for e in rates.values()
        for s in BAD
        if s in e
    )
    return {
        "worst_false_rollback": worst_false,
        "false_rollback_target": FALSE_ROLLBACK_TARGET,
        "worst_detection": worst_detect,
        "detection_target": DETECTION_TARGET,
        "targets_met": worst_false <= FALSE_ROLLBACK_TARGET and worst_detect >= DETECTION_TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plants", default="demo,example-large")
    parser.add_argument("--rates", default="0.005,0.02,0.05", help="baseline reject rates")
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument(
        "--large-devices",
        type=int,
        default=1000,
        help="example-large's fleet for part 1 (demo runs at its own size)",
    )
    parser.add_argument("--devices", type=int, default=5000, help="fleet size for part 2")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from stacks.config import load_plant
    from tests.support.tiny_model import build_tiny_package

    plants = [p for p in args.plants.split(",") if p]
    rates = [float(r) for r in args.rates.split(",") if r]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        package = build_tiny_package(Path(tmp) / "pkg", version="9.9.0")
        jobs = [
            (
                plant,
                scenario,
                seed,
                load_plant(ROOT / "plants" / f"{plant}.yaml").expected_devices
                if plant == "demo"
                else args.large_devices,
                rate,
                str(package.root),
            )
            for plant in plants
            for rate in rates
            for scenario in ("good", *BAD)
            for seed in range(args.seeds)
        ]
        runs: list[dict[str, Any]] = []
        with multiprocessing.get_context("fork").Pool(max(1, args.jobs)) as pool:
            for i, run in enumerate(pool.imap_unordered(_job, jobs, chunksize=4), 1):
                runs.append(run)
                if i % 200 == 0 or i == len(jobs):
                    print(f"{i}/{len(jobs)} promotions", file=sys.stderr, flush=True)
        scale = _one("example-large", "good", 0, args.devices, package)
    summary = summarise(runs)
    result = {
        "benchmark": "rollout_promotion",
        "seeds_per_scenario": args.seeds,
        "baseline_reject_rates": rates,
        "fleets": {p: (2 if p == "demo" else args.large_devices) for p in plants},
        "gates": summary,
        "verdict": verdict(summary),
        "scale": {
            "devices": scale["devices"],
            "rings": scale["rings"],
            "status": scale["status"],
            "total_wall_s": round(scale["wall_s"], 3),
            "simulator_wall_s": round(scale["simulator_wall_s"], 3),
            "controller_wall_s": round(scale["wall_s"] - scale["simulator_wall_s"], 3),
            "simulated_hours": round(scale["simulated_s"] / 3600, 2),
            "controller_wall_s_per_simulated_hour": round(
                (scale["wall_s"] - scale["simulator_wall_s"]) / (scale["simulated_s"] / 3600), 4
            ),
        },
        "bench_wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
