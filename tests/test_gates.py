"""Promotion gates: per-class recall drops on shared test sets."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cartag.errors import InputError
from cartag.gates import check_metrics, check_promotion, gate_status
from cartag.settings import Settings


def _task(recalls: dict[str, tuple[float, int]]) -> dict[str, Any]:
    return {
        "accuracy": 0.9,
        "macro_recall": sum(r for r, _ in recalls.values()) / len(recalls),
        "labels": list(recalls),
        "per_class": {
            label: {"precision": 0.9, "recall": recall, "support": support}
            for label, (recall, support) in recalls.items()
        },
        "confusion": [[0] * len(recalls) for _ in recalls],
    }


def _metrics(sets: dict[str, dict[str, dict[str, tuple[float, int]]]]) -> dict[str, Any]:
    return {name: {task: _task(r) for task, r in tasks.items()} for name, tasks in sets.items()}


def test_equal_or_better_recall_passes(settings: Settings) -> None:
    prod = _metrics({"cars@3:test": {"image_type": {"Dealer": (0.9, 50), "Stock": (0.8, 40)}}})
    cand = _metrics({"cars@3:test": {"image_type": {"Dealer": (0.95, 50), "Stock": (0.8, 40)}}})
    assert check_promotion(cand, prod, settings) == []
    assert gate_status(cand, prod, settings) == (True, [])


def test_drop_beyond_tolerance_fails_with_readable_message(settings: Settings) -> None:
    name = "cars@3:test:advertiser=42"
    prod = _metrics({name: {"image_type": {"Stock": (0.91, 30), "Dealer": (0.9, 30)}}})
    cand = _metrics({name: {"image_type": {"Stock": (0.85, 30), "Dealer": (0.9, 30)}}})
    failures = check_promotion(cand, prod, settings)
    assert failures == [
        "cars@3:test:advertiser=42 image_type recall of Stock drops 0.91 → 0.85 (> 0.02 tolerance)"
    ]
    passes, listed = gate_status(cand, prod, settings)
    assert not passes and listed == failures


def test_drop_within_tolerance_passes_and_exact_tolerance_passes(settings: Settings) -> None:
    prod = _metrics({"s": {"color": {"Red": (0.90, 20), "Blue": (0.80, 20)}}})
    cand = _metrics({"s": {"color": {"Red": (0.89, 20), "Blue": (0.78, 20)}}})
    assert check_promotion(cand, prod, settings) == []


def test_small_support_does_not_block(settings: Settings) -> None:
    prod = _metrics({"s": {"color": {"Pink": (1.0, 2), "Red": (0.9, 50)}}})
    cand = _metrics({"s": {"color": {"Pink": (0.5, 2), "Red": (0.9, 50)}}})
    assert check_promotion(cand, prod, settings) == []
    strict = settings.model_copy(update={"gate_min_support": 1})
    assert len(check_promotion(cand, prod, strict)) == 1


def test_only_shared_sets_tasks_and_classes_are_compared(settings: Settings) -> None:
    prod = _metrics(
        {
            "old@1:test": {"image_type": {"Dealer": (1.0, 50)}},
            "cars@3:test": {"image_type": {"Dealer": (0.9, 50)}},
        }
    )
    cand = _metrics(
        {
            "cars@3:test": {
                "image_type": {"Dealer": (0.9, 50), "Stock": (0.1, 50)},
                "color": {"Red": (0.1, 50)},
            }
        }
    )
    assert check_promotion(cand, prod, settings) == []


def test_per_field_tolerance_and_env_parsing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    prod = _metrics({"s": {"color": {"Red": (0.9, 50)}, "image_type": {"Dealer": (0.9, 50)}}})
    cand = _metrics({"s": {"color": {"Red": (0.86, 50)}, "image_type": {"Dealer": (0.86, 50)}}})
    loose_color = settings.model_copy(update={"gate_recall_tolerance_by_field": {"color": 0.05}})
    failures = check_promotion(cand, prod, loose_color)
    assert len(failures) == 1 and "image_type recall of Dealer" in failures[0]

    monkeypatch.setenv("CARTAG_GATE_RECALL_TOLERANCE", "0.1")
    monkeypatch.setenv("CARTAG_GATE_RECALL_TOLERANCE_BY_FIELD", "color=0.01, image_type=0.2")
    from_env = Settings()
    assert from_env.gate_recall_tolerance == 0.1
    assert from_env.gate_recall_tolerance_by_field == {"color": 0.01, "image_type": 0.2}
    failures = check_promotion(cand, prod, from_env)
    assert len(failures) == 1 and "color recall of Red drops 0.9 → 0.86" in failures[0]


def test_no_production_metrics_passes(settings: Settings) -> None:
    cand = _metrics({"s": {"color": {"Red": (0.1, 50)}}})
    assert gate_status(cand, None, settings) == (True, [])


def test_figures_out_of_format_are_not_compared(settings: Settings) -> None:
    # Stored before register checked them: "many" once crashed a promotion (int("many")).
    bad = {"s": {"image_type": {"per_class": {"Dealer": {"support": "many", "recall": 0.5}}}}}
    good = {"s": {"image_type": {"per_class": {"Dealer": {"support": 50, "recall": 0.9}}}}}
    assert check_promotion(bad, good, settings) == []
    assert check_promotion(good, bad, settings) == []
    worse = {"s": {"image_type": {"per_class": {"Dealer": {"support": 50, "recall": "low"}}}}}
    assert check_promotion(worse, good, settings) == []


@pytest.mark.parametrize(
    ("metrics", "where"),
    [
        ({"s": {"color": {"accuracy": True}}}, "s.color.accuracy"),
        ({"s": {"color": {"macro_recall": float("nan")}}}, "s.color.macro_recall"),
        ({"s": {"color": {"per_class": []}}}, "s.color.per_class"),
        ({"s": {"color": {"per_class": {"Red": 0.5}}}}, "s.color.per_class.Red"),
        ({"s": "x"}, "'s'"),
    ],
)
def test_check_metrics_names_the_value_out_of_format(metrics: dict[str, Any], where: str) -> None:
    with pytest.raises(InputError, match=re.escape(where)):
        check_metrics(metrics, "m.json")


def _class(**figures: Any) -> dict[str, Any]:
    return {"s": {"color": {"per_class": {"Red": figures}}}}


@pytest.mark.parametrize(
    ("metrics", "field", "allowed"),
    [
        ({"s": {"image_type": {"accuracy": 2}}}, "s.image_type.accuracy", "between 0 and 1"),
        ({"s": {"color": {"macro_recall": -0.1}}}, "s.color.macro_recall", "between 0 and 1"),
        ({"s": {"color": {"accuracy": float("inf")}}}, "s.color.accuracy", "between 0 and 1"),
        (_class(recall=5, support=40), "s.color.per_class.Red.recall", "between 0 and 1"),
        (_class(recall=1.0001, support=40), "s.color.per_class.Red.recall", "between 0 and 1"),
        (_class(precision=1.5), "s.color.per_class.Red.precision", "between 0 and 1"),
        (_class(recall=0.5, support=-1), "s.color.per_class.Red.support", "whole number"),
        (_class(recall=0.5, support=2.5), "s.color.per_class.Red.support", "whole number"),
    ],
)
def test_check_metrics_refuses_figures_out_of_range(
    metrics: dict[str, Any], field: str, allowed: str
) -> None:
    # An accuracy of 2 or a recall of 5 was stored, and passed every promotion gate.
    with pytest.raises(InputError) as raised:
        check_metrics(metrics, "m.json")
    assert raised.value.field == f"metrics.{field}"
    assert f"m.json: {field} is " in raised.value.message and allowed in raised.value.message


def test_check_metrics_takes_the_bounds_and_whole_float_supports() -> None:
    check_metrics(_class(recall=0, precision=1, support=12.0), "m.json")
    check_metrics({"s": {"color": {"accuracy": 1.0, "macro_recall": 0.0}}}, "m.json")


def test_an_inflated_recall_stored_before_the_check_fails_its_gate(settings: Settings) -> None:
    prod = _metrics({"s": {"color": {"Red": (0.9, 50)}}})
    cand = _metrics({"s": {"color": {"Red": (5.0, 50)}}})
    failures = check_promotion(cand, prod, settings)
    assert len(failures) == 2  # its macro recall (their mean) is 5.0 too
    assert "s color macro_recall is 5.0, not a fraction between 0 and 1" in failures[0]
    assert "s color recall of Red is 5.0, not a fraction between 0 and 1" in failures[1]


def test_check_metrics_takes_the_registry_format() -> None:
    check_metrics(
        {"cars@1:test": {"image_type": {"accuracy": 0.9, "macro_recall": None, "labels": ["a"],
         "per_class": {"Dealer": {"precision": 0.8, "recall": 0.9, "support": 12}}}}},
        "m.json",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value"),
    [("accuracy", 2.0), ("macro_recall", 1.5), ("accuracy", float("nan")), ("macro_recall", -1)],
)
def test_an_accuracy_or_macro_recall_out_of_range_stored_before_fails_its_gate(
    settings: Settings, key: str, value: float
) -> None:
    # Only an inflated class recall failed: an accuracy of 2 or a NaN macro recall stored
    # through the registry's functions passed every gate.
    prod = _metrics({"s": {"color": {"Red": (0.9, 50)}}})
    cand = _metrics({"s": {"color": {"Red": (0.9, 50)}}})
    cand["s"]["color"][key] = value
    failures = check_promotion(cand, prod, settings)
    assert len(failures) == 1
    assert failures[0].startswith(f"s color {key} is {value!r}, not a fraction between 0 and 1")
    assert gate_status(cand, prod, settings)[0] is False
    # On a set production does not have too: the figure is nonsense wherever it is.
    elsewhere = {**_metrics({"s": {"color": {"Red": (0.9, 50)}}}), "t": {"color": {key: value}}}
    assert [f.split(" is ")[0] for f in check_promotion(elsewhere, prod, settings)] == [
        f"t color {key}"
    ]


def test_a_nan_recall_stored_before_fails_its_gate(settings: Settings) -> None:
    prod = _metrics({"s": {"color": {"Red": (0.9, 50)}}})
    cand = _metrics({"s": {"color": {"Red": (float("nan"), 50)}}})
    cand["s"]["color"]["macro_recall"] = None  # the NaN alone, not its mean too
    [failure] = check_promotion(cand, prod, settings)
    assert "s color recall of Red is nan, not a fraction between 0 and 1" in failure


def test_reports_scored_for_different_servers_are_not_compared(settings: Settings) -> None:
    prod = _metrics({"cars@3:test": {"image_type": {"Dealer": (0.9, 50), "Stock": (0.8, 40)}}})
    cand = _metrics({"cars@3:test": {"image_type": {"Dealer": (0.95, 50), "Stock": (0.8, 40)}}})
    prod["cars@3:test"]["image_type"].update(heads="fp32", serving="fp32")
    cand["cars@3:test"]["image_type"].update(heads="int8", serving="int8")
    (failure,) = check_promotion(cand, prod, settings)
    assert failure.startswith(
        "cars@3:test image_type: the candidate was scored for servers answering with int8"
    )
    assert "CARTAG_PRECISION" in failure
    # Scored for the same servers: compared, whichever heads answered (a candidate whose
    # int8 heads did not ship is served fp32 by int8 servers, against production's int8).
    prod["cars@3:test"]["image_type"].update(heads="int8", serving="int8")
    cand["cars@3:test"]["image_type"].update(heads="fp32", serving="int8")
    assert check_promotion(cand, prod, settings) == []
    # A report that does not say (recorded before) compares as before.
    del prod["cars@3:test"]["image_type"]["serving"]
    assert check_promotion(cand, prod, settings) == []
    # The registry keeps the keys (check_metrics reads figures only).
    check_metrics(cand, "metrics.json")
