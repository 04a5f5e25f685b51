"""Rollout benchmarks on the fleet simulator; prints JSON.

1. Gates: for every bad scenario (crash, reject-all, reject-none, slow) and ``--seeds`` seeds,
   the share of promotions stopped at the canary ring and rolled back everywhere (target 100 %);
   for ``good``, the share that complete (target 100 %: no false alarms).
2. Scale: one good promotion over ``--devices`` simulated devices in the plant's rings: the
   controller's wall time against the simulated time it covered.

    .venv/bin/python bench/rollout_promotion.py --plant example-large --seeds 50 --devices 5000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BAD = ("crash", "reject-all", "reject-none", "slow")


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


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plant", default="example-large")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--gate-devices", type=int, default=1000, help="fleet size for part 1")
    parser.add_argument("--devices", type=int, default=5000, help="fleet size for part 2")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.support.tiny_model import build_tiny_package

    with tempfile.TemporaryDirectory() as tmp:
        package = build_tiny_package(Path(tmp) / "pkg", version="9.9.0")
        gates: dict[str, Any] = {}
        for scenario in ("good", *BAD):
            runs = [
                _one(args.plant, scenario, seed, args.gate_devices, package)
                for seed in range(args.seeds)
            ]
            entry: dict[str, Any] = {"runs": len(runs)}
            if scenario == "good":
                entry["completed_share"] = sum(r["status"] == "completed" for r in runs) / len(runs)
                entry["false_alarms"] = sorted({r["gate"] for r in runs if r["gate"]})
            else:
                entry["stopped_at_canary_and_rolled_back_share"] = sum(
                    r["stopped_at_canary"] and r["rolled_back_everywhere"] for r in runs
                ) / len(runs)
                gate_counts: dict[str, int] = {}
                for r in runs:
                    gate_counts[str(r["gate"])] = gate_counts.get(str(r["gate"]), 0) + 1
                entry["first_failed_gate"] = gate_counts
            entry["mean_controller_wall_s"] = round(sum(r["wall_s"] for r in runs) / len(runs), 4)
            gates[scenario] = entry
        scale = _one(args.plant, "good", 0, args.devices, package)
    result = {
        "benchmark": "rollout_promotion",
        "plant": args.plant,
        "seeds_per_scenario": args.seeds,
        "gate_fleet_devices": args.gate_devices,
        "gates": gates,
        "scale": {
            "devices": scale["devices"],
            "rings": scale["rings"],
            "status": scale["status"],
            "total_wall_s": round(scale["wall_s"], 3),
            "simulator_wall_s": round(scale["simulator_wall_s"], 3),
            "controller_wall_s": round(scale["wall_s"] - scale["simulator_wall_s"], 3),
            "simulated_hours": round(scale["simulated_s"] / 3600, 2),
            "simulated_s_per_wall_s": round(scale["simulated_s"] / max(scale["wall_s"], 1e-9)),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
