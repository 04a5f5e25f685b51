"""bench/training_design.py --loso: the variant chosen without a source, judged on it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]

# A suits the synthetic generator only; B is good on both.
TABLE = {
    "A": {"brick": 0.99, "grass": 0.99, "coins": 0.60, "print": 0.62},
    "B": {"brick": 0.97, "grass": 0.96, "coins": 0.80, "print": 0.82},
}
FAMILIES = {"brick": "synthetic", "grass": "synthetic", "coins": "photo", "print": "photo"}


@pytest.fixture(scope="module")
def design() -> ModuleType:
    """The design script as a module."""
    spec = importlib.util.spec_from_file_location(
        "training_design", REPO / "bench" / "training_design.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["training_design"] = module
    spec.loader.exec_module(module)
    return module


def test_each_held_out_source_is_judged_by_the_variant_chosen_without_it(
    design: ModuleType,
) -> None:
    result = design.leave_one_out(TABLE, FAMILIES)
    brick = result["by_source"]["brick"]
    # without brick, B is best on the mean of grass, coins and print (0.86 vs 0.737)
    assert brick["chosen_variant"] == "B" and brick["chosen_mean_on_others"] == 0.86
    assert brick["chosen_auroc"] == 0.97
    assert (brick["own_best_variant"], brick["own_best_auroc"]) == ("A", 0.99)
    assert brick["regret"] == 0.02
    assert result["by_source"]["coins"]["regret"] == 0.0
    assert result["best_on"] == {"A": ["brick", "grass"], "B": ["coins", "print"]}
    assert result["mean_regret"] == 0.0125  # (0.02 + 0.03 + 0 + 0) / 4


def test_a_variant_that_suits_one_generator_shows_when_its_family_is_held_out(
    design: ModuleType,
) -> None:
    photo = design.leave_one_out(TABLE, FAMILIES)["by_family"]["photo"]
    assert photo["chosen_variant"] == "A"  # chosen on the synthetic sources alone
    assert photo["chosen_auroc"] == 0.61
    assert (photo["own_best_variant"], photo["own_best_auroc"]) == ("B", 0.81)
    assert photo["regret"] == 0.2


def test_variants_on_different_sources_are_refused(design: ModuleType) -> None:
    table = {"A": dict(TABLE["A"]), "B": {k: v for k, v in TABLE["B"].items() if k != "print"}}
    with pytest.raises(ValueError, match="same two or more sources"):
        design.leave_one_out(table, FAMILIES)
