"""Gate arithmetic at its boundaries, with the plant file's thresholds; the sequential
comparison's error rates checked by simulation against the rates it states."""

from __future__ import annotations

import math
import random
import re

import pytest
from pydantic import ValidationError

from rollout.fleet import DeploymentProgress, RingHealth, RingRollout, ShadowCounts, StratumCounts
from rollout.gates import (
    DECIDED_CHANGED,
    DECIDED_SAME,
    UNDECIDED,
    Stratum,
    compare,
    comparison_gates,
    deployment_gates,
    health_gates,
    kappa,
    rate_ratio,
    shadow_gate,
    sprt_bounds,
    strata_for,
    wilson_lower,
)
from stacks.config import Gates

GATES = Gates(
    min_inspections=1000,
    max_deployment_failure_ratio=0.05,
    min_healthy_share=0.9,
    inference_p99_budget_ms=100,
    max_p99_regression=1.25,
    alpha=0.01,
    beta=0.01,
    tolerated_change=0.25,
    min_detectable_change=1.0,
    max_manual_rate=0.05,
)


def health(reject: int = 30, manual: int = 10, frames: int = 1000, **kw: object) -> RingHealth:
    decisions = {"pass": frames - reject - manual, "reject": reject, "manual": manual}
    values = {"devices": 10, "healthy": 10, "reporting": 10, "latency_p99_ms": 50.0}
    values.update(kw)
    return RingHealth(decisions=decisions, **values)  # type: ignore[arg-type]


def failed(results) -> set[str]:
    return {r.gate for r in results if r.failed}


def one(cand_frames: int, cand: int, ctrl_frames: int, ctrl: int) -> list[Stratum]:
    return [Stratum("l", "s", cand_frames, cand, ctrl_frames, ctrl, "concurrent")]


def test_latency_budget_and_regression() -> None:
    base = health(latency_p99_ms=40.0)
    assert failed(health_gates("r", GATES, base, health(latency_p99_ms=50.0))) == set()
    assert failed(health_gates("r", GATES, base, health(latency_p99_ms=50.1))) == {"p99_regression"}
    slow = health_gates("r", GATES, health(latency_p99_ms=90.0), health(latency_p99_ms=101.0))
    assert failed(slow) == {"p99_budget"}
    (budget,) = [r for r in slow if r.gate == "p99_budget"]
    assert budget.value == 101.0 and budget.limit == 100 and "101.0 ms" in budget.detail


def test_log_likelihood_ratio_is_the_conditional_binomial_one() -> None:
    # 2,000 candidate parts with 30 rejects, 6,000 control parts with 60: given 90 rejects in
    # all, the candidate's share is binomial with p = n1 r / (n1 r + n0)
    cmp = compare("reject", one(2000, 30, 6000, 60), GATES)

    def loglik(r: float) -> float:
        p = 2000 * r / (2000 * r + 6000)
        return 30 * math.log(p) + 60 * math.log(1 - p)

    assert cmp.llr_up == pytest.approx(loglik(2.0) - loglik(1.25))
    assert cmp.llr_down == pytest.approx(loglik(0.5) - loglik(0.8))
    assert cmp.ratio == pytest.approx((30 / 2000) / (60 / 6000))
    lower, upper = sprt_bounds(GATES)
    assert (lower, upper) == (
        pytest.approx(math.log(0.01 / (1 - 0.0025))),
        pytest.approx(math.log(0.99 / 0.0025)),
    )


def test_a_model_that_rejects_nothing_or_everything_fails_one_at_the_same_rate_passes() -> None:
    none = comparison_gates("r", GATES, [compare("reject", one(5000, 0, 5000, 50), GATES)])
    assert failed(none) == {"reject_rate"} and "ratio x0.00" in none[0].detail
    every = comparison_gates("r", GATES, [compare("reject", one(5000, 4800, 5000, 50), GATES)])
    assert failed(every) == {"reject_rate"}
    same = compare("reject", one(20000, 200, 20000, 205), GATES)
    assert same.verdict == DECIDED_SAME
    (gate,) = comparison_gates("r", GATES, [same])
    assert gate.passed and not gate.inconclusive
    # every figure behind the verdict is printed
    for figure in ("200/20000", "205/20000", "log-LR", "concurrent control"):
        assert figure in gate.detail


def test_not_enough_parts_is_inconclusive_never_a_pass_nor_a_rollback() -> None:
    # clear on the evidence, but fewer parts than the plant's minimum: inconclusive
    (few,) = comparison_gates("r", GATES, [compare("reject", one(999, 0, 5000, 50), GATES)])
    assert few.inconclusive and not few.passed and not few.failed and "minimum 1000" in few.detail
    # enough parts, too few events to tell either way
    undecided = compare("reject", one(2000, 10, 2000, 12), GATES)
    assert undecided.verdict == UNDECIDED
    (gate,) = comparison_gates("r", GATES, [undecided])
    assert gate.inconclusive and gate.line().startswith("??")
    # no control at all: inconclusive, not judged against nothing
    (lonely,) = comparison_gates(
        "r", GATES, [compare("reject", [Stratum("l", "s", 5000, 9, 0, 0, "none")], GATES)]
    )
    assert lonely.inconclusive and "no control devices" in lonely.detail


def _sequential_trial(rng: random.Random, ratio: float, base: float, step: int) -> str:
    """One candidate and one equally sized control stream, looked at every ``step`` parts, as
    the controller looks: a rollback at the first look that says ``changed``; ``same`` does not
    stop the looks (a bake goes on to its end), so what counts is whether ``changed`` is ever
    reached, and at the end whether the test says ``same``. Ville's inequality bounds the
    chance the likelihood ratio ever crosses 1/α' under the null, whatever the looks."""
    cand = ctrl = frames = 0
    verdict = UNDECIDED
    for _ in range(400):
        frames += step
        cand += _poisson(rng, step * base * ratio)
        ctrl += _poisson(rng, step * base)
        verdict = compare("reject", one(frames, cand, frames, ctrl), GATES).verdict
        if verdict == DECIDED_CHANGED:
            return verdict
    return verdict


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method in chunks (means here are small)
    total = 0
    while mean > 0:
        chunk = min(mean, 20.0)
        mean -= chunk
        limit, k, p = math.exp(-chunk), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                break
            k += 1
        total += k
    return total


@pytest.mark.parametrize(
    ("ratio", "changed_at_most", "changed_at_least"),
    [
        (1.25, 2 * 0.0025 + 0.004, 0.0),  # the tolerated change: false rollback <= alpha
        (0.8, 2 * 0.0025 + 0.004, 0.0),
        (1.0, 0.004, 0.0),
        (2.0, 1.0, 0.98),  # the minimum detectable change: found with power >= 1 - beta
        (0.5, 1.0, 0.98),
    ],
)
def test_error_rates_hold_at_every_look(
    ratio: float, changed_at_most: float, changed_at_least: float
) -> None:
    # looks every 500 parts at a 2 % baseline: the test may stop at any of them
    rng = random.Random(int(ratio * 1000))
    trials = 1500
    verdicts = [_sequential_trial(rng, ratio, 0.02, 500) for _ in range(trials)]
    changed = verdicts.count(DECIDED_CHANGED) / trials
    assert changed <= changed_at_most
    assert changed >= changed_at_least
    assert verdicts.count(UNDECIDED) / trials < 0.01  # it decides within 200,000 parts


def test_a_stations_cameras_count_as_one_observation_of_each_part() -> None:
    during = [
        StratumCounts("canary", "l1", "s1", "2.0.0", 3000, 30, 3),
        StratumCounts("fleet", "l1", "s1", "1.0.0", 9000, 60, 9),
    ]
    plain = strata_for("reject", "canary", "2.0.0", "1.0.0", during, [])
    three = strata_for("reject", "canary", "2.0.0", "1.0.0", during, [], {("l1", "s1"): 3})
    assert [s.weight for s in plain] == [1.0] and [s.weight for s in three] == [
        pytest.approx(1 / 3)
    ]
    a, b = compare("reject", plain, GATES), compare("reject", three, GATES)
    # three frames of each part carry one part's evidence: a third of the log-LR, same ratio
    assert b.llr_up == pytest.approx(a.llr_up / 3) and b.llr_down == pytest.approx(a.llr_down / 3)
    assert a.ratio == b.ratio


def test_strata_match_line_and_station_with_concurrent_controls_else_the_ring_before() -> None:
    during = [
        StratumCounts("canary", "l1", "s1", "2.0.0", 1000, 10, 5),
        StratumCounts("canary", "l1", "s2", "2.0.0", 1000, 30, 5),
        StratumCounts("fleet", "l1", "s1", "1.0.0", 4000, 44, 8),
        StratumCounts("fleet", "l9", "s9", "1.0.0", 9000, 999, 9),  # no candidate there
        StratumCounts("early", "l1", "s1", "2.0.0", 7000, 0, 0),  # promoted already: no control
    ]
    before = [
        StratumCounts("canary", "l1", "s2", "1.0.0", 3000, 90, 12),
        StratumCounts("canary", "l1", "s1", "1.0.0", 3000, 1, 1),  # unused: s1 has concurrent
    ]
    strata = strata_for("reject", "canary", "2.0.0", "1.0.0", during, before)
    assert strata == [
        Stratum("l1", "s1", 1000, 10, 4000, 44, "concurrent"),
        Stratum("l1", "s2", 1000, 30, 3000, 90, "before"),
    ]
    manual = strata_for("manual", "canary", "2.0.0", "1.0.0", during, before)
    assert [(s.cand_events, s.ctrl_events) for s in manual] == [(5, 8), (5, 12)]
    # pooled over strata by Mantel-Haenszel, not by summing counts across stations
    assert rate_ratio(strata) == pytest.approx(
        (10 * 4000 / 5000 + 30 * 3000 / 4000) / (44 * 1000 / 5000 + 90 * 1000 / 4000)
    )


def test_a_station_that_rejects_more_does_not_make_a_good_model_look_bad() -> None:
    # the candidate runs at a high-reject station, the control at both: pooled rates would
    # say x2; matched by station, the ratio is 1
    strata = [
        Stratum("l", "hot", 10000, 600, 10000, 600, "concurrent"),
        Stratum("l", "cold", 1000, 10, 90000, 900, "concurrent"),
    ]
    assert rate_ratio(strata) == pytest.approx(1.0)
    assert compare("reject", strata, GATES).verdict == DECIDED_SAME


def test_manual_ceiling_needs_the_lower_bound_above_it() -> None:
    ok = comparison_gates("r", GATES, [compare("manual", one(2000, 110, 2000, 100), GATES)])
    ceiling = next(r for r in ok if r.gate == "manual_ceiling")
    assert ceiling.passed  # 5.5 % measured, but the lower bound is below 5 %
    assert wilson_lower(110, 2000, 0.0025) < 0.05 < wilson_lower(400, 4000, 0.0025)
    high = comparison_gates("r", GATES, [compare("manual", one(4000, 400, 4000, 380), GATES)])
    assert "manual_ceiling" in failed(high)


def test_the_shadow_is_judged_on_its_reject_rate_not_on_kappa() -> None:
    # 2 % prevalence: a shadow that never rejects agrees on 98 % of frames; kappa 0, and its
    # reject rate is 0 against the served model's 2 %: it fails
    never = ShadowCounts(frames=10000, both=0, served_only=200, shadow_only=0)
    k, pa = kappa(never)
    assert k == pytest.approx(0.0) and pa == 0.0
    (gate,) = comparison_gates("r", GATES, [], never)
    assert gate.gate == "shadow_reject_rate" and gate.failed
    assert "kappa 0.000" in gate.detail and "shadow rejects 0 vs served 200" in gate.detail
    # two good models calibrated to the same rate that flag different good parts: kappa is low
    # (it depends on prevalence), the rates are the same, and the shadow passes
    different = ShadowCounts(frames=40000, both=60, served_only=140, shadow_only=150)
    k, _pa = kappa(different)
    assert k is not None and k < 0.35
    (same,) = comparison_gates("r", GATES, [], different)
    assert same.passed, same.detail
    good = ShadowCounts(frames=10000, both=180, served_only=20, shadow_only=25)
    k, pa = kappa(good)
    po = (180 + 9775) / 10000
    pe = 0.02 * 0.0205 + 0.98 * 0.9795
    assert k == pytest.approx((po - pe) / (1 - pe)) and pa == pytest.approx(360 / 405)
    (few,) = comparison_gates("r", GATES, [], ShadowCounts(frames=500, both=10))
    assert few.inconclusive and not few.failed


def _figure(detail: str, name: str) -> float:
    return float(re.search(rf"{name} (-?[0-9.]+)", detail).group(1))  # type: ignore[union-attr]


def test_the_shadow_and_the_ceiling_count_parts_not_frames() -> None:
    counts = ShadowCounts(frames=6000, both=40, served_only=20, shadow_only=25)
    one_camera, two = shadow_gate("r", GATES, counts), shadow_gate("r", GATES, counts, cameras=2)
    # the same frames from two cameras per part carry half the evidence
    for side in ("log-LR up", ", down"):
        half = _figure(two.detail, side)
        assert half == pytest.approx(_figure(one_camera.detail, side) / 2, abs=0.01)
    few = shadow_gate("r", GATES, ShadowCounts(frames=1500, both=40), cameras=2)
    assert few.inconclusive and "only 750 parts, minimum 1000" in few.detail

    # the manual ceiling's bound over parts: 4,000 frames of two cameras are 2,000 parts
    def ceiling(weight: float) -> float:
        strata = [Stratum("l", "s", 4000, 220, 4000, 200, "concurrent", weight)]
        (gate,) = [g for g in comparison_gates("r", GATES, [compare("manual", strata, GATES)])
                   if g.gate == "manual_ceiling"]  # fmt: skip
        return _figure(gate.detail, "lower confidence bound")

    assert ceiling(0.5) < ceiling(1.0)  # fewer parts: a wider interval, a lower bound


def test_plant_file_names_the_replaced_fields() -> None:
    with pytest.raises(ValidationError, match="reject_rate_tolerance was replaced by"):
        Gates(reject_rate_tolerance=0.5)
    for old in ("min_shadow_agreement", "min_shadow_kappa"):
        with pytest.raises(ValidationError, match=f"{old} was replaced by the shadow reject-rate"):
            Gates(**{old: 0.9})
    with pytest.raises(ValidationError, match="must be larger than tolerated_change"):
        Gates(tolerated_change=0.5, min_detectable_change=0.5)


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


def test_healthy_devices_are_matched_by_name_to_members_whose_execution_succeeded() -> None:
    # 20 members: 17 succeeded (3 of those now UNHEALTHY), 3 failed; ListCoreDevices also lists
    # 5 former members, HEALTHY: a count would say 19 of 20 healthy, the names say 14
    rollout = rollout_of(["SUCCEEDED"] * 17 + ["FAILED"] * 3)
    members = list(rollout.members)
    well = members[3:17] + members[17:20] + [f"removed-{i}" for i in range(5)]
    health = RingHealth(devices=25, healthy=len(well), reporting=20, healthy_devices=tuple(well))
    gate = next(
        r for r in deployment_gates("r", GATES, rollout, health) if r.gate == "healthy_share"
    )
    assert gate.value == pytest.approx(14 / 20) and "14/20 devices healthy" in gate.detail
    assert gate.failed


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
