"""Error rates of the rollout's ``reject_precision`` gate, exact (summed over every outcome); JSON.

For each number of reviewed rejects: the chance that one check rolls back a model whose true
reject precision is the minimum (stated: at most α/4 per check), the same for a one-sided
Wilson bound at the same level (why the gate does not use it), and the chance one check stops a
model of lower precision (power).

    .venv/bin/python bench/reject_precision_gate.py [--minimum 0.8] [--alpha 0.01]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rollout.fleet import RingHealth  # noqa: E402
from rollout.gates import quality_gates, wilson_upper  # noqa: E402
from stacks.config import Gates  # noqa: E402


def _pmf(n: int, k: int, p: float) -> float:
    return math.exp(
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(p) + (n - k) * math.log1p(-p)
    )  # fmt: skip


def main() -> None:
    """Print the gate's exact error rates as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minimum", type=float, default=0.8)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--extensions", type=int, default=2)
    parser.add_argument("--reviewed", type=int, nargs="+", default=[30, 50, 100, 300])
    parser.add_argument("--precisions", type=float, nargs="+", default=[0.7, 0.6, 0.45])
    args = parser.parse_args()
    gates = Gates(
        min_reject_precision=args.minimum,
        min_reviewed_rejects=1,
        alpha=args.alpha,
        max_bake_extensions=args.extensions,
    )
    per_check = args.alpha / 4 / (1 + args.extensions)
    rows = []
    for n in args.reviewed:
        failed = [
            quality_gates(
                "r", gates, RingHealth(1, 1, 1, labels={"reviewed_rejects": n, "defective_rejects": k})
            )[0].failed
            for k in range(n + 1)
        ]  # fmt: skip

        def rate(p: float, fails: list[bool], n: int = n) -> float:
            return sum(_pmf(n, k, p) for k, f in enumerate(fails) if f)

        wilson = [wilson_upper(k, n, per_check) < args.minimum for k in range(n + 1)]
        rows.append(
            {
                "reviewed_rejects": n,
                "false_rollback_at_minimum": rate(args.minimum, failed),
                "false_rollback_wilson": rate(args.minimum, wilson),
                "stopped": {str(p): round(rate(p, failed), 4) for p in args.precisions},
            }
        )
    print(
        json.dumps({"minimum": args.minimum, "stated_per_check": per_check, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
