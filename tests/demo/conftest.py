"""Sample report data shaped like a real demo run (docs/demo-report.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from demo import plant_model


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def make_sample_data(tmp: Path, *, with_model: bool = True) -> dict[str, Any]:
    """A full report input: results, health, PLC log, anomaly maps, bytes, rollout, model."""
    rng = np.random.default_rng(3)
    t0 = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
    results: list[dict[str, Any]] = []
    for cam in range(3):
        for n in range(40):
            score = float(rng.gamma(2.0, 0.1))
            decision = "reject" if score > 0.5 else "manual" if score > 0.45 else "pass"
            results.append(
                {"v": 1, "plant": "demo", "line": "l1", "station": "s1", "device": "core-1",
                 "camera": f"cam{cam}", "part_id": f"p{cam}-{n}", "seq": n,
                 "ts": _iso(t0 + timedelta(seconds=n + cam * 0.3)), "decision": decision,
                 "score": round(score, 4), "threshold": 0.5, "model": "patchcore@1.0.0",
                 "latency_ms": float(rng.lognormal(np.log(18), 0.25))}
            )  # fmt: skip
    rejects = [r for r in results if r["decision"] in ("reject", "manual")]
    seen = [
        {"part_id": r["part_id"], "camera": r["camera"],
         "ts": _iso(datetime.fromisoformat(r["ts"].replace("Z", "+00:00")) + timedelta(milliseconds=40))}
        for r in rejects
    ]  # fmt: skip
    yy, xx = np.mgrid[0:64, 0:64]
    image = (np.sin(xx / 3.0) * 60 + 128).astype(np.uint8)
    np.save(tmp / "map0.npy", np.exp(-((xx - 40) ** 2 + (yy - 20) ** 2) / 40.0))
    from PIL import Image

    Image.fromarray(image).save(tmp / "part0.png")
    anomaly = [
        {"part_id": rejects[0]["part_id"] if rejects else "p0", "camera": "cam0", "score": 0.61,
         "threshold": 0.5, "decision": "reject", "image": "part0.png", "map": "map0.npy"},
        {"part_id": "p-list", "camera": "cam1", "score": 0.7, "threshold": 0.5,
         "image": image.tolist(), "map": (np.eye(8)).tolist()},
    ]  # fmt: skip
    data: dict[str, Any] = {
        "title": "LineGuard demo report (sample)",
        "generated_at": "2026-11-28T05:00:00Z",
        "summary": {"plant": "demo", "cameras": 3, "frames": len(results), "transport": "mqtt"},
        "notes": ["sample data for tests"],
        "results": results,
        "health": [  # inspector health message v1 shape
            {
                "v": 1,
                "device": "core-1",
                "model": "patchcore@1.0.0",
                "ts": _iso(t0),
                "healthy": True,
                "frames": 120,
                "counts": {"pass": 109, "reject": 7, "manual": 4},
                "latency_ms": {"p50": 18.0, "p99": 31.0, "max": 34.1},
                "backlog": 0,
            }
        ],
        "anomaly_maps": anomaly,
        "plc": {"seen": seen},
        "bytes": {
            "frames": len(results),
            "images_bytes": len(results) * 150_000,
            "upstream": {"results": len(results) * 320, "health": 4_000},
        },
        "rollout": {
            "release": "patchcore@1.1.0",
            "previous": "patchcore@1.0.0",
            "outcome": "succeeded",
            "rings": [
                {
                    "ring": "canary",
                    "devices": 2,
                    "deploy_started_s": 0,
                    "deployed_s": 12,
                    "bake_ended_s": 72,
                    "gated_s": 73,
                    "passed": True,
                    "gates": [
                        {
                            "name": "inference p99 ms",
                            "value": 29.0,
                            "op": "<=",
                            "threshold": 50.0,
                            "passed": True,
                        }
                    ],
                },
                {
                    "ring": "wave1",
                    "devices": 20,
                    "deploy_started_s": 73,
                    "deployed_s": 95,
                    "bake_ended_s": 155,
                    "gated_s": 156,
                    "passed": True,
                    "gates": [],
                },
            ],
        },
    }
    data["review"] = {  # what demo/__main__.py's review turn gives the report
        "stations": [
            {"device": "demo-line-1-s1", "station": "s1", "url": "http://127.0.0.1:41001"},
            {"device": "demo-line-1-s2", "station": "s2", "url": "http://127.0.0.1:41002"},
        ],
        "credentials": {"operator": "demo-operator", "password": "demo-only-password",
                        "demo_only": True},
        "summary": "2 verdict(s) given through the page in headless Chromium in 3.1 s",
        "labels": [
            {"v": 1, "device": "demo-line-1-s1", "station": "s1", "part_id": "cam0-x-000007",
             "decision": "reject", "label": "defect", "defect_type": "crack",
             "operator": "demo-operator", "ts": "2026-11-28T05:00:31.250Z", "revision": 1,
             "result_seq": 17},
            {"v": 1, "device": "demo-line-1-s2", "station": "s2", "part_id": "cam0-y-000003",
             "decision": "reject", "label": "good", "operator": "demo-operator",
             "ts": "2026-11-28T05:00:33.900Z", "revision": 1, "result_seq": 5},
        ],
        "screenshot": None,
    }  # fmt: skip
    data["field"] = {  # what demo/__main__.py's retraining step gives the report
        "bucket_url": "s3://lineguard-demo-artifacts/samples/demo/",
        "uploaded": {"objects": 5, "bytes": 181000,
                     "layouts": {"defect/crack": 1, "good": 1, "unlabelled/reject": 3}},
        "merge": {"listed": 5, "used": {"defect": 1, "good": 1}, "unlabelled": {"reject": 3},
                  "duplicates_dropped": 0, "skipped": 0},
        "trained": {"model": "brick@1.1.0", "field_samples": '{"train": {"defect": 1}}'},
    }  # fmt: skip
    if with_model:
        measured = plant_model.Measured(
            150_000, plant_model.latency_from_percentiles(18, 35, n=2000), 320
        )
        data["plant_model"] = plant_model.run_sweep(
            measured,
            plant_model.Assumptions(window_s=20),
            machines=[10, 50, 80, 90, 200, 1000, 5000],
        )
    return data


@pytest.fixture
def sample_data(tmp_path: Path) -> dict[str, Any]:
    """Sample report data whose files live in tmp_path."""
    return make_sample_data(tmp_path)
