"""The plant-scale model: queue maths, saturation, edge uplink use, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from demo import plant_model as pm

IMAGE = 150_000  # bytes
RESULT = 320  # bytes


def measured(image: float = IMAGE, result: float = RESULT) -> pm.Measured:
    return pm.Measured(image, pm.latency_from_percentiles(18, 35, n=5000), result)


def point(model: dict, uplink_mbps: float, machines: int) -> dict:
    u = next(u for u in model["uplinks"] if u["uplink_mbps"] == uplink_mbps)
    return next(p for p in u["points"] if p["machines"] == machines)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_fifo_matches_the_event_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0, 10, size=300))
    service = rng.exponential(0.035, size=300)  # load ~1: long busy periods and idle gaps
    fast = pm.simulate_fifo(arrivals, service)
    slow = pm.simulate_fifo_events(arrivals.tolist(), service.tolist())
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    assert np.all(fast >= arrivals + service - 1e-12)


def test_fifo_without_contention_adds_only_service_time() -> None:
    arrivals = np.arange(10, dtype=float)
    np.testing.assert_allclose(pm.simulate_fifo(arrivals, np.full(10, 0.2)), arrivals + 0.2)


def test_fifo_per_device_axis_keeps_devices_apart() -> None:
    arrivals = np.array([[0.0, 1.0, 2.0], [0.0, 0.1, 0.2]])
    service = np.full((2, 3), 0.5)
    d = pm.simulate_fifo(arrivals, service, axis=1)
    np.testing.assert_allclose(d[0], [0.5, 1.5, 2.5])  # never waits
    np.testing.assert_allclose(d[1], [0.5, 1.0, 1.5])  # queues behind its own frames only


def test_latency_fit_reproduces_the_measured_percentiles() -> None:
    samples = np.array(pm.latency_from_percentiles(18, 35, n=50_000))
    assert np.percentile(samples, 50) == pytest.approx(18, rel=0.03)
    assert np.percentile(samples, 99) == pytest.approx(35, rel=0.05)


@pytest.mark.parametrize(("image", "uplink"), [(150_000, 100e6), (150_000, 1e9), (60_000, 100e6)])
def test_simulated_saturation_matches_the_analytical_point(image: int, uplink: float) -> None:
    m = measured(image)
    a = pm.Assumptions(window_s=30)
    n_sat = uplink / (image * 8)
    assert pm.saturation_machines(m, uplink, a) == pytest.approx(n_sat)
    grid = sorted({int(n_sat * f) for f in np.linspace(0.9, 1.1, 21)})
    model = pm.run_sweep(m, a, uplinks_bps=[uplink], machines=grid)
    found = model["uplinks"][0]["cloud_saturation_machines_simulated"]
    assert found is not None
    assert found == pytest.approx(n_sat, rel=0.03)


def test_cloud_latency_explodes_past_saturation_and_edge_does_not() -> None:
    m = measured()
    n_sat = 100e6 / (IMAGE * 8)  # 83.3 machines
    grid = [10, 40, 70, 80, 90, 120, 500, 2000]
    model = pm.run_sweep(m, pm.Assumptions(window_s=30), uplinks_bps=[100e6], machines=grid)
    cloud_p99 = [point(model, 100, n)["cloud"]["p99_ms"] for n in grid]
    below = [p for n, p in zip(grid, cloud_p99, strict=True) if n < n_sat]
    above = [p for n, p in zip(grid, cloud_p99, strict=True) if n > n_sat]
    assert max(below) < 500  # a stable queue: tens of ms of upload time plus inference
    assert min(above) > 10 * max(below)
    assert above == sorted(above)  # and it keeps on growing with N
    for n in grid:
        c = point(model, 100, n)["cloud"]
        assert c["bounded"] == (n < n_sat)
        assert c["offered_utilisation"] == pytest.approx(n * IMAGE * 8 / 100e6)
        if n < n_sat:
            assert c["utilisation"] == pytest.approx(c["offered_utilisation"], rel=0.05)
        else:
            assert c["utilisation"] > 0.98  # measured: the link is never idle
    edge_p99 = [point(model, 100, n)["edge"]["p99_ms"] for n in grid]
    assert max(edge_p99) < 1.3 * min(edge_p99)  # edge decisions do not depend on N
    assert max(edge_p99) < 60


def test_cloud_unbounded_latency_grows_with_the_window() -> None:
    m = measured()
    short = pm.simulate_cloud(200, 100e6, m, pm.Assumptions(window_s=10), np.random.default_rng(1))
    long = pm.simulate_cloud(200, 100e6, m, pm.Assumptions(window_s=40), np.random.default_rng(1))
    assert not short.bounded and not long.bounded
    assert long.p99_ms > 3 * short.p99_ms


@pytest.mark.parametrize(("machines", "uplink"), [(10, 100e6), (800, 100e6), (5000, 1e9)])
def test_edge_uplink_utilisation_is_results_only(machines: int, uplink: float) -> None:
    m = measured()
    a = pm.Assumptions(window_s=30)
    edge = pm.simulate_edge(machines, uplink, m, a, np.random.default_rng(4))
    expected = machines * RESULT * 8 / uplink
    assert edge.offered_utilisation == pytest.approx(expected)
    # measured busy time over the window: the last results of the window may spill past its end
    assert edge.utilisation == pytest.approx(expected, rel=0.03)
    assert edge.bounded


def test_protocol_overhead_and_rtt_move_the_numbers_the_right_way() -> None:
    m = measured()
    lean = pm.saturation_machines(m, 1e9, pm.Assumptions())
    assert pm.saturation_machines(m, 1e9, pm.Assumptions(protocol_overhead=1.25)) == pytest.approx(
        lean / 1.25
    )
    rng = np.random.default_rng
    near = pm.simulate_cloud(10, 1e9, m, pm.Assumptions(window_s=10, rtt_ms=5), rng(0))
    far = pm.simulate_cloud(10, 1e9, m, pm.Assumptions(window_s=10, rtt_ms=105), rng(0))
    assert far.p50_ms - near.p50_ms == pytest.approx(100, abs=1)


def test_default_sweep_covers_10_to_5000_and_states_saturation() -> None:
    model = pm.run_sweep(measured(), pm.Assumptions(window_s=10))
    assert model["machines"][0] == 10 and model["machines"][-1] == 5000
    assert [u["uplink_mbps"] for u in model["uplinks"]] == [100, 1000]
    statement = model["statement"]
    assert "100 Mbps" in statement and "1000 Mbps" in statement
    assert "saturates at 83 machines" in statement and "833 machines" in statement
    json.dumps(model)  # JSON-ready


def test_invalid_inputs_are_refused_with_the_field_name() -> None:
    with pytest.raises(pm.PlantModelError, match="image_bytes"):
        pm.Measured(0, (1.0,), 300)
    with pytest.raises(pm.PlantModelError, match="p99"):
        pm.latency_from_percentiles(20, 10)
    with pytest.raises(pm.PlantModelError, match="window_s"):
        pm.Assumptions(window_s=0)


def test_cli_writes_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.json"
    rc = pm.main(
        ["--image-bytes", "150000", "--latency-ms", "18,35", "--result-bytes", "320",
         "--out", str(out), "--plots-dir", str(tmp_path), "--window-s", "10",
         "--machines", "10", "100", "1000"]
    )  # fmt: skip
    assert rc == 0
    model = json.loads(out.read_text())
    assert model["machines"] == [10, 100, 1000]
    assert "saturates" in capsys.readouterr().out
    for name in ("plant_latency.png", "plant_uplink.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reads_latency_samples(tmp_path: Path) -> None:
    samples = tmp_path / "lat.json"
    samples.write_text(json.dumps([10.0, 12.0, 14.0]))
    out = tmp_path / "m.json"
    args = ["--image-bytes", "1e5", "--latency-samples", str(samples), "--result-bytes", "300"]
    assert pm.main([*args, "--out", str(out), "--window-s", "5", "--machines", "10"]) == 0
    assert json.loads(out.read_text())["measured"]["latency_p50_ms"] == pytest.approx(12.0)


def test_cli_bad_input_is_one_line_and_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = pm.main(
        ["--image-bytes", "1e5", "--latency-ms", "fast", "--result-bytes", "300",
         "--out", str(tmp_path / "x.json")]
    )  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --latency-ms")
    assert not (tmp_path / "x.json").exists()


def test_measured_from_run_takes_sizes_and_latency_from_the_run(tmp_path: Path) -> None:
    images = []
    for i, size in enumerate((1000, 3000)):
        path = tmp_path / f"img{i}.png"
        path.write_bytes(b"x" * size)
        images.append(path)
    results = [{"v": 1, "part_id": f"p{i}", "latency_ms": 10.0 + i} for i in range(3)]
    m = pm.measured_from_run(results, images)
    assert m.image_bytes == 2000
    assert m.latency_ms == (10.0, 11.0, 12.0)
    assert m.result_bytes == len(json.dumps(results[0], separators=(",", ":")))
    with pytest.raises(pm.PlantModelError, match="latency_ms"):
        pm.measured_from_run([{"v": 1}], images)
