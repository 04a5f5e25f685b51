"""Gate arithmetic at its boundaries, with the plant file's thresholds."""

from __future__ import annotations

from rollout.fleet import DeploymentProgress, RingHealth, RingRollout
from rollout.gates import deployment_gates, health_gates
from stacks.config import Gates

GATES = Gates(
    min_inspections=1000,
    max_deployment_failure_ratio=0.05,
    min_healthy_share=0.9,
    inference_p99_budget_ms=100,
    max_p99_regression=1.25,
    reject_rate_tolerance=0.5,
    reject_rate_abs_tolerance=0.01,
    max_manual_rate=0.05,
    min_shadow_agreement=0.95,
)


def health(reject: int = 30, manual: int = 10, frames: int = 1000, **kw: object) -> RingHealth:
    decisions = {"pass": frames - reject - manual, "reject": reject, "manual": manual}
    values = {"devices": 10, "healthy": 10, "reporting": 10, "latency_p99_ms": 50.0}
    values.update(kw)
    return RingHealth(decisions=decisions, **values)  # type: ignore[arg-type]


def failed(results) -> set[str]:
    return {r.gate for r in results if not r.passed}


def test_reject_rate_relative_and_absolute_tolerance() -> None:
    base = health(reject=100)  # 10 %: relative tolerance 5 points wins over 1 point
    assert failed(health_gates("r", GATES, base, health(reject=150))) == set()
    assert failed(health_gates("r", GATES, base, health(reject=151))) == {"reject_rate"}
    assert failed(health_gates("r", GATES, base, health(reject=50))) == set()
    assert failed(health_gates("r", GATES, base, health(reject=49))) == {"reject_rate"}
    low = health(reject=2)  # 0.2 %: the absolute point keeps small changes from failing
    assert failed(health_gates("r", GATES, low, health(reject=12))) == set()
    assert failed(health_gates("r", GATES, low, health(reject=13))) == {"reject_rate"}


def test_latency_budget_and_regression() -> None:
    base = health(latency_p99_ms=40.0)
    assert failed(health_gates("r", GATES, base, health(latency_p99_ms=50.0))) == set()
    assert failed(health_gates("r", GATES, base, health(latency_p99_ms=50.1))) == {"p99_regression"}
    slow = health_gates("r", GATES, health(latency_p99_ms=90.0), health(latency_p99_ms=101.0))
    assert failed(slow) == {"p99_budget"}
    (budget,) = [r for r in slow if r.gate == "p99_budget"]
    assert budget.value == 101.0 and budget.limit == 100 and "101.0 ms" in budget.detail


def test_too_few_inspections_fail_before_anything_else() -> None:
    results = health_gates("r", GATES, health(), health(frames=999, reject=999))
    assert [(r.gate, r.passed) for r in results] == [("min_inspections", False)]


def test_manual_and_shadow_agreement() -> None:
    assert failed(health_gates("r", GATES, health(), health(manual=51))) == {"manual_rate"}
    gates = {r.gate for r in health_gates("r", GATES, health(), health())}
    assert "shadow_agreement" not in gates  # no shadow model reported
    low = health_gates("r", GATES, health(), health(shadow_agreement=0.949))
    assert failed(low) == {"shadow_agreement"}


def rollout_of(
    statuses: list[str], job: str = "IN_PROGRESS", stalled: int = 0, members: int | None = None
) -> RingRollout:
    names = [f"dev-{i:02d}" for i in range(len(statuses) if members is None else members)]
    executions = dict(zip(names, statuses, strict=False))
    progress = DeploymentProgress("d", "ACTIVE", job, {}, executions)
    pending = [n for n in names if executions.get(n, "NONE") in ("NONE", "QUEUED", "IN_PROGRESS")]
    return RingRollout(progress, tuple(names), tuple(pending[:stalled]))


def test_deployment_failures_healthy_share_and_abort() -> None:
    # a continuous job stays IN_PROGRESS: the members' executions say how the ring went
    ok = rollout_of(["SUCCEEDED"] * 19 + ["FAILED"])
    assert failed(deployment_gates("r", GATES, ok, health(devices=20, healthy=20))) == set()
    bad = rollout_of(["SUCCEEDED"] * 18 + ["TIMED_OUT"] * 2)
    result = failed(deployment_gates("r", GATES, bad, health(devices=20, healthy=20)))
    assert result == {"deployment_failure_ratio"}
    # healthy devices never count beyond those the deployment reached
    queued = rollout_of(["SUCCEEDED"] * 17 + ["QUEUED"] * 3)
    assert failed(deployment_gates("r", GATES, queued, health(healthy=20))) == {"healthy_share"}
    aborted = rollout_of(["SUCCEEDED"] * 20, job="CANCELED")
    (gate,) = [r for r in deployment_gates("r", GATES, aborted, health(healthy=20)) if not r.passed]
    assert gate.gate == "deployment_failure_ratio" and "abort criteria" in gate.detail


def test_stalled_members_count_as_failed_and_members_the_job_never_reached_count() -> None:
    # two members offline past the deadline: failures, not devices still being waited for
    stalled = rollout_of(["SUCCEEDED"] * 18 + ["IN_PROGRESS"] * 2, stalled=2)
    assert stalled.failed == 2 and stalled.done is False
    (gate, *_) = deployment_gates("r", GATES, stalled, health(devices=20, healthy=20))
    assert not gate.passed and "2 of them without a result by the deadline" in gate.detail
    # a member without any execution (joined, job not released to it yet) is pending
    joined = rollout_of(["SUCCEEDED"] * 19, members=20)
    assert joined.pending == ["dev-19"] and not joined.done and joined.failed == 0
    # stalled members stay failed when read again after the bake; new joiners only pend
    later = stalled.remeasured(stalled.progress, [*stalled.members, "dev-new"])
    assert later.failed == 2 and "dev-new" in later.pending
