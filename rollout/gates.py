"""The quality gates checked on a ring after its bake: pure functions of the figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollout.fleet import RingHealth, RingRollout
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

    def line(self) -> str:
        """One human-readable line for progress output and the report."""
        mark = "ok  " if self.passed else "FAIL"
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
    # healthy on the new version: never more than the members the deployment succeeded on
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
    """Gates on what the ring reported during the bake, against the ring's own baseline."""
    out: list[GateResult] = []
    frames = baked.frames
    enough = frames >= gates.min_inspections
    out.append(
        GateResult(
            "min_inspections",
            ring,
            enough,
            float(frames),
            float(gates.min_inspections),
            f"{frames} parts judged during the bake, minimum {gates.min_inspections}",
        )
    )
    if not enough:
        return out
    p99 = baked.latency_p99_ms
    if p99 is not None:
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
    rate = baked.rate("reject") or 0.0
    base = baseline.rate("reject") if baseline else None
    if base is not None:
        delta = abs(rate - base)
        allowed = max(gates.reject_rate_tolerance * base, gates.reject_rate_abs_tolerance)
        out.append(
            GateResult(
                "reject_rate",
                ring,
                delta <= allowed,
                rate,
                allowed,
                f"reject rate {_pct(rate)} vs ring baseline {_pct(base)} "
                f"(|diff| {_pct(delta)}, allowed {_pct(allowed)})",
            )
        )
    manual = baked.rate("manual") or 0.0
    out.append(
        GateResult(
            "manual_rate",
            ring,
            manual <= gates.max_manual_rate,
            manual,
            gates.max_manual_rate,
            f"manual rate {_pct(manual)}, maximum {_pct(gates.max_manual_rate)}",
        )
    )
    if baked.shadow_agreement is not None:
        agree = baked.shadow_agreement
        out.append(
            GateResult(
                "shadow_agreement",
                ring,
                agree >= gates.min_shadow_agreement,
                agree,
                gates.min_shadow_agreement,
                f"shadow agreement {_pct(agree)}, minimum {_pct(gates.min_shadow_agreement)}",
            )
        )
    return out
