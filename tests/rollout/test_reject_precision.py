"""The optional ``reject_precision`` gate: off unless the plant file sets it; inconclusive with
few reviewed rejects; fails only when the candidate's operator-confirmed precision is below the
minimum with confidence. Its error rates are checked exactly (the binomial sum over every
outcome) and by simulation, and it is driven end to end through the fleet simulator."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from rollout.controller import Controller
from rollout.fleet import RingHealth
from rollout.gates import binomial_cdf, binomial_upper, quality_gates, wilson_upper
from rollout.health import aggregate
from rollout.simulator import simulated_fleet
from stacks.config import Gates, PlantConfig, load_plant, load_plant_release

from .conftest import without_shadow

GATES = Gates(min_reject_precision=0.8, min_reviewed_rejects=30, alpha=0.01, max_bake_extensions=2)
ALPHA_PER_CHECK = 0.01 / 4 / 3  # α/4, Bonferroni over the bake's end and two extensions


def health(reviewed: int, defective: int) -> RingHealth:
    labels = {"reviewed_rejects": reviewed, "defective_rejects": defective}
    return RingHealth(devices=1, healthy=1, reporting=1, labels=labels)


def test_the_gate_is_off_unless_the_plant_file_sets_a_minimum() -> None:
    assert Gates().min_reject_precision is None
    assert quality_gates("canary", Gates(), health(0, 0)) == []


def test_few_reviewed_rejects_are_inconclusive_even_when_all_were_good() -> None:
    (result,) = quality_gates("canary", GATES, health(29, 0))
    assert result.gate == "reject_precision" and result.inconclusive and not result.failed
    assert "only 29 reviewed rejects, minimum 30" in result.detail
    (none,) = quality_gates("canary", GATES, health(0, 0))
    assert none.inconclusive and none.value is None and "n/a" in none.detail


def test_it_fails_only_below_the_minimum_with_confidence() -> None:
    (low,) = quality_gates("canary", GATES, health(100, 60))  # 60 %: well below 80 %
    assert low.failed and low.value == pytest.approx(0.6)
    assert "60/100 reviewed rejects found defective" in low.detail
    (near,) = quality_gates("canary", GATES, health(100, 75))  # 75 %: not below with confidence
    assert near.passed
    (good,) = quality_gates("canary", GATES, health(100, 95))
    assert good.passed and good.limit == 0.8
    # the bound printed is the exact one at α/4 per check, and it agrees with the decision
    bound = binomial_upper(60, 100, ALPHA_PER_CHECK)
    assert f"upper confidence bound {100 * bound:.2f}%" in low.detail
    assert binomial_cdf(60, 100, bound) == pytest.approx(ALPHA_PER_CHECK, rel=1e-6)
    assert binomial_upper(75, 100, ALPHA_PER_CHECK) >= 0.8 > bound


def test_counts_corrected_below_zero_in_a_window_never_break_the_gate() -> None:
    # corrections of verdicts given before the window can make a window's counts negative
    (result,) = quality_gates("canary", GATES, health(-3, -5))
    assert result.inconclusive and "0/0" in result.detail


def decisions(reviewed: int) -> list[bool]:
    """The gate's verdict (failed?) for every number of defective rejects out of ``reviewed``."""
    return [quality_gates("c", GATES, health(reviewed, k))[0].failed for k in range(reviewed + 1)]


def _pmf(n: int, k: int, p: float) -> float:
    return math.exp(
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(p) + (n - k) * math.log1p(-p)
    )  # fmt: skip


@pytest.mark.parametrize("reviewed", [30, 50, 100, 300])
def test_a_model_at_the_minimum_is_rolled_back_at_most_at_the_stated_rate(reviewed: int) -> None:
    # exact: summed over every outcome, the chance that a model whose true precision is the
    # minimum fails one check — at most α/4 per check, as stated
    floor = GATES.min_reject_precision
    assert floor is not None
    verdicts = decisions(reviewed)
    fail = sum(_pmf(reviewed, k, floor) for k, failed in enumerate(verdicts) if failed)
    assert fail <= ALPHA_PER_CHECK
    assert fail >= ALPHA_PER_CHECK / 5  # and not far more cautious than it says
    # failing is monotone: fewer defective rejects never pass where more failed
    assert verdicts == sorted(verdicts, reverse=True)


@pytest.mark.parametrize("reviewed", [30, 50, 100, 300])
def test_a_wilson_bound_would_roll_back_good_models_more_often_than_stated(reviewed: int) -> None:
    # why the gate uses the exact test: the one-sided Wilson upper bound undercovers here
    floor = 0.8
    fail = sum(
        _pmf(reviewed, k, floor)
        for k in range(reviewed + 1)
        if wilson_upper(k, reviewed, ALPHA_PER_CHECK) < floor
    )
    assert fail > 1.5 * ALPHA_PER_CHECK  # 3.7x at 30, 3.0x at 50, 1.9x at 100, 1.6x at 300


@pytest.mark.parametrize(
    ("precision", "reviewed", "failed_at_least", "failed_at_most"),
    [
        (0.9, 100, 0.0, 0.0005),  # a good model: almost never rolled back
        (0.8, 100, 0.0, 2 * ALPHA_PER_CHECK),  # at the minimum: at most about α' (sampling)
        (0.6, 100, 0.85, 1.0),  # 40 % of its rejects good parts, at 100 reviewed: stopped
        (0.6, 300, 0.999, 1.0),
        (0.45, 40, 0.9, 1.0),  # half its rejects good parts, at 40 reviewed: stopped
    ],
)
def test_error_rates_by_simulation(
    precision: float, reviewed: int, failed_at_least: float, failed_at_most: float
) -> None:
    rng = random.Random(int(precision * 1000) + reviewed)
    verdicts = decisions(reviewed)
    trials = 20_000
    failed = 0
    for _ in range(trials):
        defective = sum(1 for _ in range(reviewed) if rng.random() < precision)
        failed += verdicts[defective]
    assert failed_at_least <= failed / trials <= failed_at_most


def test_the_ring_health_counts_verdicts_under_the_version_that_judged_the_parts() -> None:
    entry = {"reject": {"good": 2, "defect": 8}, "manual": {"good": 1, "defect": 1}}
    messages = [
        {"v": 1, "device": "a", "model": "m@2.0.0", "counts": {}, "labels": {**entry, "model": "m@2.0.0"}},
        # a review queue from before the update: the old model's parts, judged by it
        {"v": 1, "device": "a", "model": "m@2.0.0", "counts": {}, "labels": {**entry, "model": "m@1.0.0"}},
        {"v": 1, "device": "b", "model": "m@1.0.0", "counts": {}, "labels": None},
    ]  # fmt: skip
    new = aggregate(messages, devices=2, healthy=2, version="2.0.0")
    assert new.labels == {
        "reviewed_rejects": 10,
        "defective_rejects": 8,
        "reviewed_manual": 2,
        "defective_manual": 1,
    }
    old = aggregate(messages, devices=2, healthy=2, version="1.0.0")
    assert old.labels["reviewed_rejects"] == 10
    assert RingHealth.from_json(new.to_json()) == new


@pytest.fixture
def plant(demo_plant: PlantConfig) -> PlantConfig:
    gated = demo_plant.gates.model_copy(update={"min_reject_precision": 0.8})
    return without_shadow(demo_plant).model_copy(update={"gates": gated})


def _promote(plant: PlantConfig, releases_dir: Path, tmp: Path, make_package, **kw):  # type: ignore[no-untyped-def]
    release = load_plant_release(plant, releases_dir)
    sim = simulated_fleet(plant, release, new_version="1.1.0", devices=20, seed=5, **kw)
    lines: list[str] = []
    ctl = Controller(plant=plant, fleet=sim, clock=sim.clock, releases_dir=releases_dir,
                     state_dir=tmp / "state", log=lines.append)  # fmt: skip
    return ctl.promote(make_package("1.1.0")), lines


def test_a_model_whose_rejects_are_half_good_parts_is_rolled_back(
    plant: PlantConfig, releases_dir: Path, tmp_path: Path, make_package
) -> None:
    # same reject and manual rates as the served model: only the operators' verdicts tell
    report, lines = _promote(plant, releases_dir, tmp_path, make_package, scenario="false-rejects")
    assert report.status == "rolled-back"
    assert any("FAIL canary: reject_precision" in line for line in lines)
    assert not any("FAIL " in line and "_rate:" in line for line in lines)


def test_a_good_model_passes_the_precision_gate(
    plant: PlantConfig, releases_dir: Path, tmp_path: Path, make_package
) -> None:
    report, lines = _promote(plant, releases_dir, tmp_path, make_package, scenario="good")
    assert report.status == "completed"
    (gate,) = [line for line in lines if "ok   canary: reject_precision" in line]
    assert "reviewed rejects found defective" in gate


def test_without_reviews_the_gate_waits_for_a_person(
    plant: PlantConfig, releases_dir: Path, tmp_path: Path, make_package
) -> None:
    report, lines = _promote(
        plant, releases_dir, tmp_path, make_package, scenario="good", review_share=(0.0, 0.0)
    )
    assert report.status == "inconclusive"
    assert any("??   canary: reject_precision" in line and "only 0 reviewed" in line
               for line in lines)  # fmt: skip


@pytest.mark.parametrize(
    ("gates", "words"),
    [
        ({"min_reject_precision": 1.5}, "min_reject_precision"),
        ({"min_reject_precision": 0}, "min_reject_precision"),
        ({"min_reject_precision": "high"}, "min_reject_precision"),
        ({"min_reviewed_rejects": 0}, "min_reviewed_rejects"),
    ],
)
def test_a_bad_value_in_the_plant_file_is_refused_naming_the_field(
    tmp_path: Path, gates: dict[str, object], words: str
) -> None:
    import yaml

    from .conftest import REPO

    doc = yaml.safe_load((REPO / "plants" / "demo.yaml").read_text())
    doc["gates"].update(gates)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises((ValueError, ValidationError)) as err:
        load_plant(path)
    assert words in str(err.value) and "demo.yaml" in str(err.value)
