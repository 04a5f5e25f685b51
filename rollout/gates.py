"""The quality gates checked on a ring after its bake: pure functions of the figures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from rollout.fleet import RingHealth, RingRollout, ShadowCounts, StratumCounts
from stacks.config import Gates


@dataclass(frozen=True)
class GateResult:
    """One gate on one ring: the figure measured, the limit, and whether it passed."""

    gate: str
    ring: str
    passed: bool
    value: float | None
    limit: float | None
    detail: str
    inconclusive: bool = False
    """Not enough evidence either way: neither passed nor failed (the bake goes on)."""

    @property
    def failed(self) -> bool:
        """Failed on the evidence: a rollback."""
        return not self.passed and not self.inconclusive

    def line(self) -> str:
        """One human-readable line for progress output and the report."""
        mark = "ok  " if self.passed else ("??  " if self.inconclusive else "FAIL")
        return f"{mark} {self.ring}: {self.gate}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the report and the persisted state."""
        return {
            "gate": self.gate,
            "ring": self.ring,
            "passed": self.passed,
            "value": self.value,
            "limit": self.limit,
            "detail": self.detail,
            "inconclusive": self.inconclusive,
        }


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def deployment_gates(
    ring: str, gates: Gates, rollout: RingRollout, health: RingHealth
) -> list[GateResult]:
    """Gates on the deployment itself: failed or stalled members, healthy members on the new
    version — counted over the ring's members, not over the job's executions."""
    targeted = max(1, rollout.total)
    failed = rollout.failed
    ratio = failed / targeted
    stalled = len([m for m in rollout.stalled if m in set(rollout.pending)])
    detail = f"{failed}/{rollout.total} devices failed or rolled back ({_pct(ratio)})"
    if stalled:
        detail += f", {stalled} of them without a result by the deadline"
    if rollout.aborted:
        detail += f"; IoT job {rollout.progress.job_status.lower()} by its abort criteria"
    out = [
        GateResult(
            "deployment_failure_ratio",
            ring,
            ratio <= gates.max_deployment_failure_ratio and not rollout.aborted,
            ratio,
            gates.max_deployment_failure_ratio,
            f"{detail}, limit {_pct(gates.max_deployment_failure_ratio)}",
        )
    ]
    # healthy on the new version: members whose execution succeeded and that report healthy,
    # matched by name where the fleet names them (ListCoreDevices lists devices removed from
    # the group and devices the deployment failed on too: API reference), else capped
    if health.healthy_devices is not None:
        well = set(health.healthy_devices)
        healthy = sum(1 for m in rollout.members if rollout.status(m) == "SUCCEEDED" and m in well)
    else:
        healthy = min(health.healthy, rollout.succeeded)
    share = healthy / targeted
    out.append(
        GateResult(
            "healthy_share",
            ring,
            share >= gates.min_healthy_share,
            share,
            gates.min_healthy_share,
            f"{healthy}/{rollout.total} devices healthy on the new version "
            f"({_pct(share)}), minimum {_pct(gates.min_healthy_share)}",
        )
    )
    return out


def health_gates(
    ring: str, gates: Gates, baseline: RingHealth | None, baked: RingHealth
) -> list[GateResult]:
    """Latency gates on what the ring reported during the bake: the budget, and the regression
    against the ring's own baseline on the previous version."""
    out: list[GateResult] = []
    p99 = baked.latency_p99_ms
    if p99 is None:
        return out
    budget = gates.inference_p99_budget_ms
    out.append(
        GateResult(
            "p99_budget",
            ring,
            p99 <= budget,
            p99,
            budget,
            f"inference p99 {p99:.1f} ms, budget {budget:.1f} ms",
        )
    )
    prev = baseline.latency_p99_ms if baseline else None
    if prev:
        limit = gates.max_p99_regression * prev
        out.append(
            GateResult(
                "p99_regression",
                ring,
                p99 <= limit,
                p99 / prev,
                gates.max_p99_regression,
                f"inference p99 {p99:.1f} ms vs previous version {prev:.1f} ms "
                f"(x{p99 / prev:.2f}, limit x{gates.max_p99_regression:.2f})",
            )
        )
    return out


# -- the comparison gates: candidate against concurrent control ------------------------------

DECIDED_CHANGED = "changed"
DECIDED_SAME = "same"
UNDECIDED = "undecided"


@dataclass(frozen=True)
class Stratum:
    """One line and station: the candidate's frames and events of one decision there, and the
    control's (devices on the previous version at the same line and station over the same
    window, or else the candidate devices' own window before the deployment)."""

    line: str
    station: str
    cand_frames: int
    cand_events: int
    ctrl_frames: int
    ctrl_events: int
    control: str  # "concurrent" or "before"
    weight: float = 1.0
    """Evidence per frame: 1 / the station's cameras. Each camera photographs every part, so
    a part's frames share its defect and count as one observation, not several (the design
    effect of clusters whose members agree; conservative where cameras disagree)."""


def _pi(n1: float, n0: float, ratio: float) -> float:
    """Share of a stratum's events expected from the candidate when its rate is ``ratio``
    times the control's: n1·r / (n1·r + n0) (two Poisson counts, conditioned on their sum)."""
    return n1 * ratio / (n1 * ratio + n0)


def _llr(strata: list[Stratum], r0: float, r1: float) -> float:
    """Log likelihood ratio of rate ratio ``r1`` against ``r0``, summed over the strata.

    Within a stratum the control's rate is a nuisance parameter; conditioning on the number of
    events there removes it, and the candidate's share of them is binomial with
    :func:`_pi` (the classical conditional test of two Poisson rates)."""
    total = 0.0
    for s in strata:
        events = s.cand_events + s.ctrl_events
        if events == 0 or s.cand_frames == 0 or s.ctrl_frames == 0:
            continue
        p0, p1 = _pi(s.cand_frames, s.ctrl_frames, r0), _pi(s.cand_frames, s.ctrl_frames, r1)
        llr = s.cand_events * math.log(p1 / p0) + s.ctrl_events * math.log((1 - p1) / (1 - p0))
        total += s.weight * llr
    return total


def rate_ratio(strata: list[Stratum]) -> float | None:
    """Mantel–Haenszel rate ratio of candidate to control over the strata (None: no events
    on the control side, where it is undefined)."""
    num = den = 0.0
    for s in strata:
        exposure = s.cand_frames + s.ctrl_frames
        if s.cand_frames == 0 or s.ctrl_frames == 0:
            continue
        num += s.cand_events * s.ctrl_frames / exposure
        den += s.ctrl_events * s.cand_frames / exposure
    return num / den if den > 0 else None


@dataclass(frozen=True)
class Comparison:
    """The sequential test of one decision's rate, candidate against control.

    Two one-sided Wald sequential probability ratio tests: rate ratio ``1 + tolerated`` (a good
    model, H0) against ``1 + min_detectable`` (H1), and their reciprocals for a falling rate.
    Each side has error rates α/4 and β (α is shared by the reject and manual comparisons, two
    sides each), so a model within the tolerated change is rolled back with probability at
    most α per ring, and one changed by the minimum detectable change passes with at most β.
    Wald's bounds ``A = log((1-β)/α')``, ``B = log(β/(1-α'))`` (Wald 1945, "Sequential tests
    of statistical hypotheses", Ann. Math. Statist. 16): under the null the likelihood ratio is
    a non-negative martingale, so by Ville's inequality it ever reaches ``e^A`` with probability
    at most ``e^-A`` <= α' — whenever and however often the controller looks, and although it
    keeps looking after a ``same``.
    """

    decision: str
    strata: tuple[Stratum, ...]
    llr_up: float
    llr_down: float
    upper: float
    lower: float

    @property
    def cand_frames(self) -> int:
        return sum(s.cand_frames for s in self.strata)

    @property
    def cand_events(self) -> int:
        return sum(s.cand_events for s in self.strata)

    @property
    def ctrl_frames(self) -> int:
        return sum(s.ctrl_frames for s in self.strata)

    @property
    def ctrl_events(self) -> int:
        return sum(s.ctrl_events for s in self.strata)

    @property
    def ratio(self) -> float | None:
        return rate_ratio(list(self.strata))

    @property
    def cand_parts(self) -> float:
        """The candidate's parts: frames weighted by one over their station's cameras."""
        return sum(s.cand_frames * s.weight for s in self.strata)

    @property
    def cand_part_events(self) -> float:
        """The candidate's events counted in parts (as :attr:`cand_parts`)."""
        return sum(s.cand_events * s.weight for s in self.strata)

    @property
    def verdict(self) -> str:
        """``changed`` (either side crossed its upper bound), ``same`` (both crossed their
        lower bounds) or ``undecided``."""
        if self.llr_up >= self.upper or self.llr_down >= self.upper:
            return DECIDED_CHANGED
        if self.llr_up <= self.lower and self.llr_down <= self.lower:
            return DECIDED_SAME
        return UNDECIDED

    def detail(self) -> str:
        ratio = self.ratio
        shown = "undefined" if ratio is None else f"x{ratio:.2f}"
        concurrent = sum(1 for s in self.strata if s.control == "concurrent")
        cand = self.cand_events / self.cand_frames if self.cand_frames else 0.0
        ctrl = self.ctrl_events / self.ctrl_frames if self.ctrl_frames else 0.0
        return (
            f"{self.decision} rate {_pct(cand)} ({self.cand_events}/{self.cand_frames}) vs "
            f"control {_pct(ctrl)} ({self.ctrl_events}/{self.ctrl_frames}), ratio {shown}; "
            f"{len(self.strata)} line/station strata, {concurrent} with concurrent control "
            f"devices; log-LR up {self.llr_up:.2f}, down {self.llr_down:.2f}, bounds "
            f"[{self.lower:.2f}, {self.upper:.2f}]: {self.verdict}"
        )


def sprt_bounds(gates: Gates) -> tuple[float, float]:
    """Wald's (lower, upper) log-LR bounds for one side of one comparison."""
    alpha = gates.alpha / 4  # reject and manual, two sides each
    return math.log(gates.beta / (1 - alpha)), math.log((1 - gates.beta) / alpha)


def compare(decision: str, strata: list[Stratum], gates: Gates) -> Comparison:
    """The sequential test of ``decision``'s rate over ``strata`` (see :class:`Comparison`)."""
    r0, r1 = 1 + gates.tolerated_change, 1 + gates.min_detectable_change
    lower, upper = sprt_bounds(gates)
    return Comparison(
        decision,
        tuple(strata),
        _llr(strata, r0, r1),
        _llr(strata, 1 / r0, 1 / r1),
        upper,
        lower,
    )


def strata_for(
    decision: str,
    ring: str,
    candidate: str,
    previous: str,
    during: list[StratumCounts],
    before: list[StratumCounts],
    cameras: dict[tuple[str, str], int] | None = None,
) -> list[Stratum]:
    """Match the ring's candidate devices with control devices by line and station.

    Control at a line and station: the devices of other rings still on ``previous`` there
    during the same window (same shift, same line); where there are none (the plant's last
    ring, a station only this ring has), the ring's own devices there before the deployment.
    """

    def events(c: StratumCounts) -> int:
        return c.reject if decision == "reject" else c.manual

    cand: dict[tuple[str, str], list[int]] = {}
    ctrl: dict[tuple[str, str], list[int]] = {}
    for c in during:
        key = (c.line, c.station)
        if c.ring == ring and c.version == candidate:
            acc = cand.setdefault(key, [0, 0])
        elif c.ring != ring and c.version == previous:
            acc = ctrl.setdefault(key, [0, 0])
        else:
            continue
        acc[0] += c.frames
        acc[1] += events(c)
    own: dict[tuple[str, str], list[int]] = {}
    for c in before:
        if c.ring == ring and c.version == previous:
            acc = own.setdefault((c.line, c.station), [0, 0])
            acc[0] += c.frames
            acc[1] += events(c)
    out = []
    for key in sorted(cand):
        frames, n = cand[key]
        weight = 1.0 / max(1, (cameras or {}).get(key, 1))
        if key in ctrl and ctrl[key][0] > 0:
            out.append(Stratum(*key, frames, n, ctrl[key][0], ctrl[key][1], "concurrent", weight))
        elif key in own and own[key][0] > 0:
            out.append(Stratum(*key, frames, n, own[key][0], own[key][1], "before", weight))
        else:
            out.append(Stratum(*key, frames, n, 0, 0, "none", weight))
    return out


def kappa(counts: ShadowCounts) -> tuple[float | None, float | None]:
    """Cohen's kappa and positive agreement on rejects between shadow and served model."""
    n = counts.frames
    if n <= 0:
        return None, None
    a, b, c = counts.both, counts.served_only, counts.shadow_only
    d = n - a - b - c
    po = (a + d) / n
    served, shadow = (a + b) / n, (a + c) / n
    pe = served * shadow + (1 - served) * (1 - shadow)
    k = None if pe >= 1 else (po - pe) / (1 - pe)
    pa = 2 * a / (2 * a + b + c) if (2 * a + b + c) else None
    return k, pa


def comparison_gates(
    ring: str,
    gates: Gates,
    comparisons: list[Comparison],
    shadow: ShadowCounts | None = None,
    *,
    final: bool = True,
) -> list[GateResult]:
    """Gate results of the comparisons: failed when the rate changed, passed when it did not,
    inconclusive while the test is undecided or fewer than ``min_inspections`` parts were judged
    (never a pass, never a rollback: the controller extends the bake, then asks a person).

    ``final``: at the end of a bake (or an extension), when the manual ceiling is checked too;
    the looks during a bake check the sequential tests only, whose bounds hold at every look,
    while the ceiling's fixed-sample bound would not."""
    out: list[GateResult] = []
    for cmp in comparisons:
        verdict = cmp.verdict
        few = cmp.cand_parts < gates.min_inspections
        no_control = cmp.ctrl_frames == 0
        detail = cmp.detail()
        if few:
            detail += f"; only {cmp.cand_parts:.0f} parts judged, minimum {gates.min_inspections}"
        elif no_control:
            detail += "; no control devices and no baseline to compare with"
        inconclusive = few or no_control or verdict == UNDECIDED
        out.append(
            GateResult(
                f"{cmp.decision}_rate",
                ring,
                verdict == DECIDED_SAME and not inconclusive,
                cmp.ratio,
                1 + gates.min_detectable_change,
                detail,
                inconclusive=inconclusive,
            )
        )
        if final and cmp.decision == "manual" and not few:
            # the plant's ceiling on the manual share: failed only when the lower confidence
            # bound of the candidate's manual rate is above it; checked at the bake's end and
            # at most once per extension, so α/4 is split over those checks (Bonferroni)
            # in parts, not frames: a part's frames from several cameras are one observation
            checks = 1 + gates.max_bake_extensions
            parts, events = cmp.cand_parts, cmp.cand_part_events
            low = wilson_lower_real(events, parts, gates.alpha / 4 / checks)
            rate = cmp.cand_events / cmp.cand_frames
            out.append(
                GateResult(
                    "manual_ceiling",
                    ring,
                    low <= gates.max_manual_rate,
                    rate,
                    gates.max_manual_rate,
                    f"manual rate {_pct(rate)} (lower confidence bound {_pct(low)}), ceiling "
                    f"{_pct(gates.max_manual_rate)}",
                )
            )
    if shadow is not None and shadow.frames > 0:
        out.append(shadow_gate(ring, gates, shadow))
    return out


def shadow_gate(ring: str, gates: Gates, shadow: ShadowCounts, cameras: int = 1) -> GateResult:
    """The shadow's reject rate against the served model's on the same frames, by the same
    sequential test as the bake's comparisons (:func:`compare`).

    Not a threshold on kappa: two good models calibrated to the same false-reject rate may flag
    different good parts, and kappa then depends on the defect prevalence (at 0.5 % it can be
    below 0.5 for two good models). Kappa and positive agreement are printed beside the verdict.
    The shared rejects make the two counts positively correlated, so the test, which takes them
    as independent, is conservative (it decides later, and errs less often, than it states).
    ``cameras``: the most cameras a station of the ring has; the shadow's figures are per ring,
    so each frame counts as 1/cameras of a part (:attr:`Stratum.weight`).
    """
    n = shadow.frames
    weight = 1.0 / max(1, cameras)
    cmp = compare(
        "shadow reject",
        [
            Stratum(
                "shadow",
                ring,
                n,
                shadow.both + shadow.shadow_only,
                n,
                shadow.both + shadow.served_only,
                "paired",
                weight,
            )
        ],
        gates,
    )
    k, pa = kappa(shadow)
    few = n * weight < gates.min_inspections
    verdict = cmp.verdict
    detail = (
        f"shadow rejects {shadow.both + shadow.shadow_only} vs served {shadow.both + shadow.served_only} "
        f"on the same {n} frames (both {shadow.both}, served only {shadow.served_only}, shadow "
        f"only {shadow.shadow_only}), ratio "
        + ("undefined" if cmp.ratio is None else f"x{cmp.ratio:.2f}")
        + f"; log-LR up {cmp.llr_up:.2f}, down {cmp.llr_down:.2f}, bounds "
        f"[{cmp.lower:.2f}, {cmp.upper:.2f}]: {verdict}; kappa "
        + ("n/a" if k is None else f"{k:.3f}")
        + ", positive agreement "
        + ("n/a" if pa is None else f"{pa:.3f}")
    )
    if few:
        detail += f"; only {n * weight:.0f} parts, minimum {gates.min_inspections}"
    inconclusive = few or verdict == UNDECIDED
    return GateResult(
        "shadow_reject_rate",
        ring,
        verdict == DECIDED_SAME and not inconclusive,
        cmp.ratio,
        1 + gates.min_detectable_change,
        detail,
        inconclusive=inconclusive,
    )


def quality_gates(ring: str, gates: Gates, health: RingHealth) -> list[GateResult]:
    """Gates on operators' verdicts of the candidate's parts during the bake (review station).

    ``reject_precision`` (on when ``min_reject_precision`` is set): the share of reviewed
    rejects operators found defective. Failed only when that share is below the minimum with
    confidence 1 - α/4 per check — the exact one-sided binomial test, P(at most the defective
    rejects seen | precision at the minimum) ≤ α/4 ÷ checks, Bonferroni over the bake's end and
    its extensions as ``manual_ceiling`` — so a model whose precision is at the minimum is
    rolled back with probability at most α/4 per ring; inconclusive with fewer than
    ``min_reviewed_rejects``; passed otherwise. The Wilson upper bound would be simpler, but at
    a precision near 0.8 it undercovers: a model at the minimum would fail 1.6 to 3.7 times
    as often as stated at 300 to 30 reviewed rejects (``tests/rollout/test_reject_precision.py``).
    Reviewed rejects are the ones operators chose to look at: the figure is theirs, not the
    line's.
    """
    floor = gates.min_reject_precision
    if floor is None:
        return []
    reviewed = max(0, health.labels.get("reviewed_rejects", 0))
    defective = min(reviewed, max(0, health.labels.get("defective_rejects", 0)))
    alpha = gates.alpha / 4 / (1 + gates.max_bake_extensions)
    precision = defective / reviewed if reviewed else None
    shown = "n/a" if precision is None else _pct(precision)
    upper = binomial_upper(defective, reviewed, alpha)
    detail = (
        f"reject precision {shown} ({defective}/{reviewed} reviewed rejects found defective; "
        f"upper confidence bound {_pct(upper)}), minimum {_pct(floor)}"
    )
    few = reviewed < gates.min_reviewed_rejects
    if few:
        detail += f"; only {reviewed} reviewed rejects, minimum {gates.min_reviewed_rejects}"
    below = not few and binomial_cdf(defective, reviewed, floor) <= alpha
    return [
        GateResult(
            "reject_precision",
            ring,
            not few and not below,
            precision,
            floor,
            detail,
            inconclusive=few,
        )
    ]


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), summed in log space (no overflow for large n)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [
        base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def binomial_upper(k: int, n: int, alpha: float) -> float:
    """One-sided exact (Clopper–Pearson) upper confidence bound of a binomial rate at level
    1 - alpha: the rate at which seeing at most ``k`` of ``n`` has probability ``alpha``."""
    if n <= 0 or k >= n:
        return 1.0
    low, high = k / n, 1.0
    for _ in range(50):  # bisection: binomial_cdf(k, n, p) falls as p rises
        mid = (low + high) / 2
        if binomial_cdf(k, n, mid) > alpha:
            low = mid
        else:
            high = mid
    return high


def wilson_upper(events: int, n: int, alpha: float) -> float:
    """One-sided Wilson score upper confidence bound of a binomial rate at level 1 - alpha."""
    if n <= 0:
        return 1.0
    return 1.0 - wilson_lower(n - events, n, alpha)


def wilson_lower(events: int, n: int, alpha: float) -> float:
    """One-sided Wilson score lower confidence bound of a binomial rate at level 1 - alpha."""
    return wilson_lower_real(float(events), float(n), alpha)


def wilson_lower_real(events: float, n: float, alpha: float) -> float:
    """:func:`wilson_lower` for effective (weighted) counts."""
    if n <= 0:
        return 0.0
    z = NormalDist().inv_cdf(1 - alpha)
    p = events / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))
