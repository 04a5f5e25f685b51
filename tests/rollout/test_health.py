"""Health aggregation reads the real inspector's health messages; the simulator emits the same."""

from __future__ import annotations

import pytest

from inspector.engine import ShadowStats
from inspector.health import HealthReporter
from inspector.messages import Identity
from rollout.health import aggregate, model_version
from rollout.simulator import FleetSimulator, ModelBehaviour


def reporter(device: str, model: str, agreement: float | None = None) -> HealthReporter:
    now = [0.0]
    shadow = (
        None
        if agreement is None
        else ShadowStats("old@1", frames=100, agreed=round(agreement * 100), both=3)
    )
    identity = Identity(plant="demo", line="line-1", station="press-out", device=device)
    rep = HealthReporter(
        identity,
        interval_s=60,
        status=lambda: {"healthy": True, "model": model, "last_error": None, "shadow": shadow},
        clock=lambda: now[0],
        wall_clock=lambda: 1_767_225_600.0 + now[0],
    )
    rep.now = now  # type: ignore[attr-defined]
    return rep


def feed(rep: HealthReporter, decisions: list[str], latency: float) -> dict:
    for i, decision in enumerate(decisions):
        rep.record(
            {"decision": decision, "latency_ms": latency + i % 3, "score": 0.1, "threshold": 0.2}
        )
    rep.now[0] += 60  # type: ignore[attr-defined]
    message = rep.tick()
    assert message is not None
    return message


def test_aggregates_real_inspector_health_messages() -> None:
    a = feed(
        reporter("dev-a", "tiny@1.1.0", 0.9), ["pass"] * 90 + ["reject"] * 8 + ["manual"] * 2, 20
    )
    b = feed(reporter("dev-b", "tiny@1.1.0", 1.0), ["pass"] * 50, 40)
    old = feed(reporter("dev-c", "tiny@1.0.0"), ["reject"] * 50, 5)
    health = aggregate([a, b, old], devices=3, healthy=2, version="1.1.0")
    assert health.decisions == {"pass": 140, "reject": 8, "manual": 2}
    assert health.reporting == 2 and health.devices == 3 and health.healthy == 2
    assert health.latency_p99_ms == pytest.approx(42.0)  # the worse device's p99
    assert health.shadow_agreement == pytest.approx(0.95)
    assert aggregate([old], devices=1, healthy=1).rate("reject") == 1.0
    assert model_version(a) == "1.1.0" and model_version({"model": None}) is None


def test_simulator_messages_have_the_inspector_shape() -> None:
    real = feed(reporter("dev-a", "tiny@1.1.0", 0.9), ["pass"] * 10, 20)
    sim = FleetSimulator(
        [("canary", "arn:aws:iot:eu-west-1:1:thinggroup/x", 3)],
        {"com.lineguard.Model": "1.0.0"},
        behaviours={"1.0.0": ModelBehaviour(agreement=0.98)},
        offline_share=0.0,
    )
    messages = sim.health_messages(
        "demo", "arn:aws:iot:eu-west-1:1:thinggroup/x", sim.now - 600, sim.now
    )
    assert len(messages) == 6  # two 300 s health intervals per device
    for message in messages:
        assert set(message) == set(real)
        assert set(message["counts"]) == set(real["counts"])
        assert set(message["latency_ms"]) == set(real["latency_ms"])
        assert message["frames"] == sum(message["counts"].values()) == 300
    # a window read twice reads the same parts
    again = sim.health_messages(
        "demo", "arn:aws:iot:eu-west-1:1:thinggroup/x", sim.now - 600, sim.now
    )
    assert again == messages
