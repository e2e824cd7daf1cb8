"""The issue-17 simulation (benchmarks/advertiser_adaptation.py) on synthetic embeddings.

The same code as the real-data run: a store with the global model's answers, staff
fixing wrong answers in the fix page's order, the listing read again after each batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from benchmarks.adaptation_simulation import ARMS, SimulationModel, World, at, seed_store, simulate

from cartag.clock import FakeClock
from cartag.models.adaptation import AdaptationParams
from cartag.pipeline.adaptation import AdvertiserAdapters
from cartag.store.db import Database, upgrade
from cartag.vocab import COLORS, IMAGE_TYPES

DIM = 32
DEALER, STOCK = IMAGE_TYPES.index("Dealer"), IMAGE_TYPES.index("Stock")
WHITE = COLORS.index("White")


def world(rng: np.random.Generator) -> World:
    """An affected studio (one look; the model calls its Stock photos Dealer, narrowly)
    and a control dealer (varied photos the model gets right but for 1 in 50)."""
    n = 200
    studio = rng.standard_normal(DIM) * 2 + 0.6 * rng.standard_normal((n, DIM))
    varied = rng.standard_normal((n, DIM)) * 2
    emb = np.concatenate([studio, varied]).astype(np.float32)
    type_p = np.zeros((2 * n, 3))
    dealer_share = rng.uniform(0.5, 0.75, n)
    type_p[:n, DEALER], type_p[:n, STOCK] = dealer_share, 0.99 - dealer_share
    type_p[n:, DEALER], type_p[n:, STOCK] = 0.95, 0.04
    type_p[:, 2] = 0.01
    y_type = np.concatenate([np.full(n, STOCK), np.full(n, DEALER)])
    y_type[n + rng.choice(n, 4, replace=False)] = STOCK  # the control's few mistakes
    color_p = np.full((2 * n, len(COLORS)), 0.01)
    color_p[:, WHITE] = 1 - 0.01 * (len(COLORS) - 1)
    return World(
        keys=[f"sim:{i}" for i in range(2 * n)],
        emb=emb,
        type_p=type_p,
        color_p=color_p,
        y_type=y_type,
        y_color=np.full(2 * n, WHITE),
        groups={"studio": list(range(n)), "dealer": list(range(n, 2 * n))},
        model=SimulationModel(np.zeros(DIM, np.float32), np.ones(DIM, np.float32)),
    )


def test_ten_fixes_halve_the_affected_error_and_leave_the_control_and_the_off_switch_alone(
    tmp_path: Path,
) -> None:
    sim = world(np.random.default_rng(0))
    db = Database(f"sqlite:///{tmp_path / 'sim.db'}")
    try:
        upgrade(db)
        clock = FakeClock()
        seed_store(db, sim, clock)
        curves = {}
        for group in sim.groups:
            for arm in ("all", "off"):
                adapters = AdvertiserAdapters(True, ARMS[arm] or AdaptationParams())
                curves[(group, arm)] = simulate(db, sim, clock, group, arm, adapters, 2, 10)
    finally:
        db.dispose()
    studio, off = curves[("studio", "all")], curves[("studio", "off")]
    assert studio[0].error_rate == 1.0 and studio[0].changed == 0
    assert at(studio, 10).error_rate <= 0.5
    assert at(off, 10).error_rate == 1.0  # fixes alone repair only the fixed photos
    assert all(step.changed == 0 for step in off)
    assert all(step.changed == 0 for step in curves[("dealer", "all")])
    assert curves[("dealer", "all")][-1].errors == 0  # its four mistakes were fixed


def test_the_sweeps_run_the_rules_they_name_and_the_prior_sweep_includes_the_served_rules() -> None:
    from benchmarks.advertiser_adaptation import prior_settings, repeated_settings

    repeated = [params for _, params in repeated_settings()]
    assert repeated and all(p.repeated and not p.nearest and not p.prior for p in repeated)
    priors = dict(prior_settings())
    assert AdaptationParams() in priors.values()  # the served default is one of the rows
    assert len(set(priors.values())) == len(priors)  # each row a different setting
