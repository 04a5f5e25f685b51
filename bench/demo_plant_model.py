"""Benchmark: the plant-scale model's full sweep (N 10..5,000, 100 Mbps and 1 Gbps); prints JSON.

    python bench/demo_plant_model.py [--image-bytes B] [--latency-ms P50,P99] [--result-bytes B]

The defaults are representative figures (a 150 kB image, 18/35 ms inference, a 320 B result);
the demo passes its measured ones to ``python -m demo.plant_model`` instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> int:
    """Time the sweep and print its saturation points as JSON."""
    from demo import plant_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-bytes", type=float, default=150_000)
    p.add_argument("--latency-ms", default="18,35")
    p.add_argument("--result-bytes", type=float, default=320)
    args = p.parse_args()
    p50, _, p99 = args.latency_ms.partition(",")
    measured = plant_model.Measured(
        args.image_bytes,
        plant_model.latency_from_percentiles(float(p50), float(p99) if p99 else None),
        args.result_bytes,
    )
    started = time.perf_counter()
    model = plant_model.run_sweep(measured)
    elapsed = time.perf_counter() - started
    frames = sum(
        pt["cloud"]["frames"] + pt["edge"]["frames"] for u in model["uplinks"] for pt in u["points"]
    )
    print(
        json.dumps(
            {
                "bench": "demo_plant_model",
                "sweep_wall_s": round(elapsed, 3),
                "points": len(model["machines"]) * len(model["uplinks"]),
                "frames_simulated": frames,
                "frames_per_s": round(frames / elapsed),
                "saturation": {
                    f"{u['uplink_mbps']:g}Mbps": {
                        "analytic_machines": round(u["cloud_saturation_machines_analytic"], 1),
                        "simulated_machines": u["cloud_saturation_machines_simulated"],
                        "cloud_p99_over_deadline_from": u["cloud_p99_over_deadline_from"],
                        "edge_uplink_utilisation_at_5000": round(u["edge_utilisation_at_max"], 4),
                    }
                    for u in model["uplinks"]
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
