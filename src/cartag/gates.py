"""Promotion gates: a candidate may not lower any class's recall on any shared test set.

:func:`check_promotion` compares metrics; :class:`PromotionGatedError` is how
:func:`cartag.deploy.promote.promote` refuses a candidate that fails. A core module:
promotion (:mod:`cartag.deploy`) enforces the rule and the sweep's leaderboard
(:mod:`cartag.training.sweep.leaderboard`) shows its verdict.

Metrics are the registry's format (written by :mod:`cartag.training.sweep.sweep`)::

    {"<set name>": {"image_type": {"accuracy": f, "macro_recall": f, "labels": [...],
                                   "per_class": {label: {"precision": f, "recall": f,
                                                         "support": n}},
                                   "confusion": [[n, ...], ...]},
                    "color": {...}}}

A report may name the heads it measured (``"heads": "int8"`` or ``"fp32"``) and the
servers it was scored for (``"serving"``); two reports scored for different servers are
not compared, and that is a failure (:func:`serving_mismatch`).
Set names are ``REF:test`` and ``REF:test:advertiser=ID``. Only sets, tasks and classes
present in both the candidate's and production's metrics are compared; a class with
fewer than ``settings.gate_min_support`` examples on a set is not (two examples cannot
measure a recall drop). A candidate's figure out of range (an accuracy of 2, a NaN macro
recall, a recall of 5: stored before the registry checked them) fails on any set.
"""

from __future__ import annotations

import math
from typing import Any

from typing_extensions import TypeIs

from cartag.errors import ConflictError, InputError
from cartag.settings import Settings

# Recalls are rounded to 4 decimals in the metrics; a drop of exactly the tolerance passes.
_EPSILON = 1e-9


class PromotionGatedError(ConflictError):
    """The candidate fails a promotion gate (409); ``--force`` promotes anyway.

    Attributes:
        failures: One readable message per failing (set, task, class).
    """

    code = "promotion_gated"

    def __init__(self, version: str, failures: list[str]) -> None:
        super().__init__(
            f"{version} fails {len(failures)} promotion gate(s): "
            + "; ".join(failures)
            + ". Fix the candidate, or promote anyway with --force (API: force=true)."
        )
        self.failures = failures


def tolerance_for(task: str, settings: Settings) -> float:
    """The recall tolerance of one task (``image_type`` or ``color``)."""
    return settings.gate_recall_tolerance_by_field.get(task, settings.gate_recall_tolerance)


def check_promotion(
    candidate_metrics: dict[str, Any], production_metrics: dict[str, Any], settings: Settings
) -> list[str]:
    """Compare a candidate with production, class by class.

    Args:
        candidate_metrics: The candidate's metrics (format in the module docstring).
        production_metrics: Production's metrics on the same sets.
        settings: Supplies ``gate_recall_tolerance``, ``gate_recall_tolerance_by_field``
            and ``gate_min_support``.

    Returns:
        One readable message per failing (set, task, class), e.g. ``cars@3:test:advertiser=42
        image_type recall of Stock drops 0.91 → 0.85 (> 0.02 tolerance)``, and one per
        candidate's figure out of range (:func:`stored_out_of_range`, on any of its sets);
        empty = passes.
    """
    failures = stored_out_of_range(candidate_metrics)
    for set_name in sorted(set(candidate_metrics) & set(production_metrics)):
        cand_set = candidate_metrics[set_name]
        prod_set = production_metrics[set_name]
        if not isinstance(cand_set, dict) or not isinstance(prod_set, dict):
            continue
        for task in sorted(set(cand_set) & set(prod_set)):
            cand_task, prod_task = cand_set[task], prod_set[task]
            if not isinstance(cand_task, dict) or not isinstance(prod_task, dict):
                continue
            mismatch = serving_mismatch(cand_task, prod_task)
            if mismatch is not None:
                failures.append(f"{set_name} {task}: {mismatch}")
                continue
            tolerance = tolerance_for(task, settings)
            failures.extend(
                _task_failures(set_name, task, cand_task, prod_task, tolerance, settings)
            )
    return failures


def serving_mismatch(candidate: dict[str, Any], production: dict[str, Any]) -> str | None:
    """Why two reports of one set and task cannot be compared, or None when they can.

    A report may say which servers it was scored for (``serving``: ``int8`` when they
    answer with a folder's int8 heads, ``fp32`` when with its float ones; written by
    ``cartag train``). Figures scored for int8 servers and figures scored for fp32
    servers describe two deployments: a class's recall differs between a model's int8 and
    fp32 heads by more than any gate's tolerance. A candidate without int8 heads
    (``heads: fp32``) scored for int8 servers is compared with production's int8 figures:
    that is what those servers would answer. Reports without the key (older ones) are
    compared as before.
    """
    mine, theirs = candidate.get("serving"), production.get("serving")
    if mine is None or theirs is None or mine == theirs:
        return None
    return (
        f"the candidate was scored for servers answering with {mine} heads, production for "
        f"servers answering with {theirs} heads; score both for one deployment: "
        "cartag train --dataset <the set's dataset> --sweep <its file>, with the servers' "
        "CARTAG_PRECISION and CARTAG_ENGINE (it scores production again)"
    )


def stored_out_of_range(metrics: dict[str, Any]) -> list[str]:
    """One failure per report whose ``accuracy`` or ``macro_recall`` is a number out of
    its range (NaN and infinities included), on any set.

    The registry refuses such figures now (:func:`check_metrics`), but rows stored before
    keep them: an accuracy of 2 ranks a candidate first on the leaderboard and a NaN
    compares as nothing, so they never pass. Figures that are not numbers at all are left
    to :func:`check_promotion`'s comparison, which skips them.
    """
    failures = []
    for set_name, tasks in sorted(metrics.items()):
        if not isinstance(tasks, dict):
            continue
        for task, report in sorted(tasks.items()):
            if not isinstance(report, dict):
                continue
            for key in _RATES:
                value = report.get(key)
                if _out_of_range(key, value):
                    failures.append(
                        f"{set_name} {task} {key} is {value!r}, not {_RATE_RANGE}; record the "
                        "candidate's metrics again (cartag models register --metrics)"
                    )
    return failures


def _out_of_range(key: str, value: object) -> bool:
    """Whether ``value`` is a number (not a bool) that is not finite or not in its range."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return not math.isfinite(value) or not in_range(key, value)


def is_figure(value: object) -> TypeIs[int | float]:
    """Whether ``value`` is a metric's number: a finite int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# The figures check_metrics reads, per report and per class, and the range of each:
# a rate is a fraction of examples, a support a count of them.
_RATES = ("accuracy", "macro_recall")
_CLASS_RATES = ("precision", "recall")
_RATE_RANGE = "a fraction between 0 and 1"
_COUNT_RANGE = "a whole number of examples, 0 or more"


def in_range(key: str, value: float) -> bool:
    """Whether a finite figure is in its range: a count (``support``) is a whole number
    of at least 0, every other figure a fraction between 0 and 1."""
    if key == "support":
        return value >= 0 and float(value).is_integer()
    return 0.0 <= value <= 1.0


def check_metrics(metrics: dict[str, Any], where: str) -> None:
    """Refuse metrics not in the registry's format (module docstring) before storing them.

    Only the figures that the registry reads (``accuracy``, ``macro_recall``, each class's
    ``precision``, ``recall`` and ``support``) are checked: each must be null or a finite
    number in its range — a rate between 0 and 1, a support a whole number of at least 0 —
    since a recall of 5 or an accuracy of 2 would pass every promotion gate. Other keys are
    kept as given.

    Args:
        metrics: ``{set name: {task: report}}``.
        where: Where they came from, for the message (a file name).

    Raises:
        InputError: Naming the first value out of format or range and its allowed range;
            field ``metrics.<set>.<task>.<figure>`` (``metrics`` for the structure).
    """
    for set_name, tasks in metrics.items():
        if not isinstance(tasks, dict):
            raise InputError(
                f"{where}: {set_name!r} must map each task to its report ({{set name: "
                "{image_type|color: {accuracy, macro_recall, per_class}}}, as a sweep "
                "records)",
                "metrics",
            )
        for task, report in tasks.items():
            here = f"{set_name}.{task}"
            if not isinstance(report, dict):
                raise InputError(f"{where}: {here} must be an object of figures", "metrics")
            figures = [(f"{here}.{k}", k, report.get(k)) for k in _RATES]
            per_class = report.get("per_class")
            if per_class is not None and not isinstance(per_class, dict):
                raise InputError(f"{where}: {here}.per_class must map labels to figures", "metrics")
            for label, row in (per_class or {}).items():
                if not isinstance(row, dict):
                    raise InputError(
                        f"{where}: {here}.per_class.{label} must be an object", "metrics"
                    )
                figures += [
                    (f"{here}.per_class.{label}.{k}", k, row.get(k))
                    for k in (*_CLASS_RATES, "support")
                ]
            for name, key, value in figures:
                if value is None or (is_figure(value) and in_range(key, value)):
                    continue
                allowed = _COUNT_RANGE if key == "support" else _RATE_RANGE
                raise InputError(
                    f"{where}: {name} is {value!r}; it must be {allowed} (or null): record "
                    "the figures the evaluation printed",
                    f"metrics.{name}",
                )


def _task_failures(
    set_name: str,
    task: str,
    candidate: dict[str, Any],
    production: dict[str, Any],
    tolerance: float,
    settings: Settings,
) -> list[str]:
    cand_classes = candidate.get("per_class") or {}
    prod_classes = production.get("per_class") or {}
    failures = []
    for label in sorted(set(cand_classes) & set(prod_classes)):
        cand, prod = cand_classes[label], prod_classes[label]
        if not isinstance(cand, dict) or not isinstance(prod, dict):
            continue
        supports = (cand.get("support"), prod.get("support"))
        # Figures out of format (stored before register checked them) are not compared.
        support = min(int(s) if is_figure(s) else 0 for s in supports)
        if support < max(settings.gate_min_support, 1):
            continue
        before, after = prod.get("recall"), cand.get("recall")
        if _out_of_range("recall", after):
            # Stored before register checked ranges: an inflated (or NaN) recall never passes.
            failures.append(
                f"{set_name} {task} recall of {label} is {after!r}, not {_RATE_RANGE}; "
                "record the candidate's metrics again (cartag models register --metrics)"
            )
            continue
        if not is_figure(before) or not is_figure(after):
            continue
        if float(before) - float(after) > tolerance + _EPSILON:
            failures.append(
                f"{set_name} {task} recall of {label} drops {float(before):.4g} → "
                f"{float(after):.4g} (> {tolerance:g} tolerance)"
            )
    return failures


def gate_status(
    candidate_metrics: dict[str, Any], production_metrics: dict[str, Any] | None, settings: Settings
) -> tuple[bool, list[str]]:
    """``(passes, failures)``; a candidate passes trivially when there is no production model."""
    if not production_metrics:
        return True, []
    failures = check_promotion(candidate_metrics, production_metrics, settings)
    return not failures, failures
