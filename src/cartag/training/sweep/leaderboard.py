"""The leaderboard of a sweep: production and every candidate on the same test sets.

Rows come from the study in the project's database (each completed trial keeps its
model version, validation score and test metrics) and from the production model's
metrics recorded by the same run. Columns per test set: image-type macro recall,
color accuracy, the worst per-class recall change against production, and the
promotion gates' verdict (:mod:`cartag.gates`). Shown as a Rich table
(``cartag train``, ``cartag train leaderboard``) and as a self-contained HTML report
(:mod:`cartag.web.leaderboard`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from cartag.errors import NotFoundError
from cartag.gates import gate_status
from cartag.settings import Settings
from cartag.store import datasets
from cartag.store.db import Database
from cartag.store.model_versions import CANDIDATE, PRODUCTION, alias_version, get_alias
from cartag.store.tables import ModelVersionRow
from cartag.training.sweep.study import close_storage, optuna_storage, study_name
from cartag.training.sweep.sweep_config import SweepConfig, describe


@dataclass
class Entry:
    """One model on the leaderboard.

    Attributes:
        label: ``production`` or ``trial N``.
        version: Model version.
        metrics: ``{set: {task: metrics}}`` on the test sets.
        trial: Trial number (None for production).
        params: The trial's configuration.
        objective: Validation macro recall (the sweep's objective).
        seconds: Training time of the trial.
        passes: Gate verdict against production (None for production itself).
        failures: Gate failure messages.
        is_candidate: Whether the ``candidate`` alias points at it.
        precision: What its metrics measure: ``int8`` or ``fp32`` heads, as a server of
            the sweep's settings answers (None: not known, metrics from the registry).
    """

    label: str
    version: str
    metrics: dict[str, Any]
    trial: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None
    seconds: float | None = None
    passes: bool | None = None
    failures: list[str] = field(default_factory=list)
    is_candidate: bool = False
    precision: str | None = "fp32"


@dataclass
class Leaderboard:
    """Production and the candidates, best validation score first."""

    study: str
    dataset_ref: str
    sets: list[str]
    production: Entry | None
    candidates: list[Entry]
    note: str | None = None

    @property
    def entries(self) -> list[Entry]:
        return ([self.production] if self.production else []) + self.candidates


def _find_study(storage: Any, ref: str) -> str:
    """The most recently started study of a dataset version."""
    import optuna

    found = [
        s
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if s.user_attrs.get("dataset_ref") == ref
    ]
    if not found:
        raise NotFoundError(
            f"no sweep has run on {ref}; run `cartag train --dataset {ref} --sweep sweep.yaml`"
        )
    epoch = dt.datetime.min
    return max(found, key=lambda s: (s.datetime_start or epoch, s.study_name)).study_name


def load_leaderboard(
    db: Database, settings: Settings, ref: str, config: SweepConfig | None = None
) -> Leaderboard:
    """Build the leaderboard of the sweep ``config`` on ``ref`` (default: its latest sweep).

    Raises:
        NotFoundError: No such dataset version, or no sweep on it.
    """
    import optuna
    from optuna.trial import TrialState

    with db.read() as session:
        resolved = datasets.get_version(session, ref).ref
        candidate_version = alias_version(session, CANDIDATE)
        current = get_alias(session, PRODUCTION)
    storage = optuna_storage(db)
    try:
        name = study_name(resolved, config) if config else _find_study(storage, resolved)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError as exc:
            raise NotFoundError(
                f"the sweep {name} has not run yet; run `cartag train --dataset {resolved} "
                "--sweep <that file>`"
            ) from exc
        prod = study.user_attrs.get("production")
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    finally:
        close_storage(storage)
    production = None
    if isinstance(prod, dict):
        production = Entry(
            "production",
            str(prod["version"]),
            dict(prod["metrics"]),
            precision=str(prod.get("precision", "fp32")),
        )
    production, note = _current_production(production, current, trials, resolved)
    candidates = []
    for trial in trials:
        attrs = trial.user_attrs
        metrics = dict(attrs.get("metrics") or {})
        passes, failures = gate_status(
            metrics, production.metrics if production else None, settings
        )
        candidates.append(
            Entry(
                label=f"trial {trial.number}",
                version=str(attrs.get("version", "?")),
                metrics=metrics,
                trial=trial.number,
                params=dict(trial.params),
                objective=trial.value,
                seconds=attrs.get("seconds"),
                passes=passes if production else None,
                failures=failures,
                is_candidate=attrs.get("version") == candidate_version,
                precision=str(attrs.get("precision", "fp32")),
            )
        )
    candidates.sort(key=lambda e: (-(e.objective or 0.0), e.trial or 0))
    sets = sorted({s for e in ([production] if production else []) + candidates for s in e.metrics})
    return Leaderboard(name, resolved, sets, production, candidates, note)


def _current_production(
    scored: Entry | None,
    current: ModelVersionRow | None,
    trials: list[Any],
    ref: str,
) -> tuple[Entry | None, str | None]:
    """The production entry to compare with: the model production names now.

    The sweep scored the production of its day; once another version is promoted, the
    gates ``cartag models promote`` runs compare with that one, from its registered
    metrics, and so must the leaderboard's verdicts (they said ``pass`` to a promotion
    that was then refused). When it has no metrics on the sweep's test sets, the
    sweep's production stays, named as such, with a note saying how to score the new one.
    """
    if current is None or (scored is not None and current.version == scored.version):
        return scored, None
    sets = {s for t in trials for s in (t.user_attrs.get("metrics") or {})}
    shared = {s: m for s, m in current.metrics.items() if s in sets}
    if shared:
        return Entry("production", current.version, shared, precision=None), None
    note = (
        f"production is now {current.version}, not scored on {ref}'s test sets: the gates "
        f"above are against the production of the sweep; `cartag train --dataset {ref} "
        "--sweep <its file>` again scores it (no new trial)"
    )
    if scored is not None:
        scored.label = "production then"
    return scored, note


def _metric(entry: Entry, set_name: str, task: str, key: str) -> float | None:
    value = entry.metrics.get(set_name, {}).get(task, {}).get(key)
    return None if value is None else float(value)


def recall_deltas(
    entry: Entry, production: Entry | None, set_name: str, task: str
) -> dict[str, float]:
    """Per-class recall of ``entry`` minus production's on one set (classes in both)."""
    if production is None or entry is production:
        return {}
    mine = entry.metrics.get(set_name, {}).get(task, {}).get("per_class", {})
    theirs = production.metrics.get(set_name, {}).get(task, {}).get("per_class", {})
    deltas = {}
    for label in mine.keys() & theirs.keys():
        a, b = mine[label].get("recall"), theirs[label].get("recall")
        if a is not None and b is not None:
            deltas[label] = round(float(a) - float(b), 4)
    return deltas


def worst_delta(entry: Entry, production: Entry | None, set_name: str) -> tuple[str, float] | None:
    """The largest per-class recall drop (most negative change) over both tasks, if any."""
    worst: tuple[str, float] | None = None
    for task in ("image_type", "color"):
        for label, delta in recall_deltas(entry, production, set_name, task).items():
            if worst is None or delta < worst[1]:
                worst = (f"{label}", delta)
    return worst


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def short_set_name(lb: Leaderboard, set_name: str) -> str:
    """A test set's name without the dataset version in front (``test``, not ``cars@3:test``)."""
    prefix = f"{lb.dataset_ref}:"
    return set_name[len(prefix) :] if set_name.startswith(prefix) else set_name


def summary(lb: Leaderboard) -> list[dict[str, Any]]:
    """What the table and the report show of each model, in :attr:`Leaderboard.entries` order.

    Returns:
        One row per model: ``entry``, ``config`` (its configuration in words),
        ``objective`` (validation macro recall, formatted), ``precision`` (the heads
        the figures are of: ``int8``, ``fp32`` or ``-``) and ``cells``, one per test set
        with ``type_mr``, ``color_acc`` and ``worst`` (the largest per-class recall drop
        against production, ``""`` when none) as display strings.
    """
    rows = []
    for entry in lb.entries:
        cells = []
        for set_name in lb.sets:
            worst = worst_delta(entry, lb.production, set_name)
            cells.append(
                {
                    "type_mr": _fmt(_metric(entry, set_name, "image_type", "macro_recall")),
                    "color_acc": _fmt(_metric(entry, set_name, "color", "accuracy")),
                    "worst": "" if worst is None else f"{worst[1]:+.3f} {worst[0]}",
                }
            )
        rows.append(
            {
                "entry": entry,
                "config": describe(entry.params) if entry.params else "",
                "objective": _fmt(entry.objective),
                "precision": entry.precision or "-",
                "cells": cells,
            }
        )
    return rows


def rich_table(lb: Leaderboard) -> Table:
    """The leaderboard as a Rich table: one row per model, one column per test set."""
    table = Table(
        title=f"{lb.study}: production vs candidates",
        show_lines=False,
        caption=lb.note,
        caption_justify="left",
    )
    table.add_column("model")
    table.add_column("version", overflow="fold")
    table.add_column("configuration", overflow="fold")
    table.add_column("val MR", justify="right")
    table.add_column("heads")
    for set_name in lb.sets:
        table.add_column(f"{short_set_name(lb, set_name)}\ntype MR / color acc / worst Δ")
    table.add_column("gates")
    for row in summary(lb):
        entry = row["entry"]
        cells = [
            f"{c['type_mr']} / {c['color_acc']}" + (f" / {c['worst']}" if c["worst"] else "")
            for c in row["cells"]
        ]
        gate = (
            "-"
            if entry.passes is None
            else ("pass" if entry.passes else f"FAIL ({len(entry.failures)})")
        )
        label = entry.label + (" *" if entry.is_candidate else "")
        table.add_row(
            label, entry.version, row["config"], row["objective"], row["precision"], *cells, gate
        )
    return table
