"""The monitoring report: fix rates per version/day/advertiser, the jump rule."""

from __future__ import annotations

import datetime as dt

import pytest

from cartag.clock import FakeClock
from cartag.deploy.monitor import Thresholds, build_report, parse_since
from cartag.errors import InputError
from cartag.pipeline.fixes import Author, apply_fix
from cartag.pipeline.rollups import rollup
from cartag.store.db import Database
from cartag.store.monitoring import record_counts
from cartag.store.tables import FixAuditRow, ImageRow
from tests.support.factories import add_image
from tests.support.monitoring import SWITCH, TODAY, answers, seed_monitoring

NOW = dt.datetime.combine(TODAY, dt.time(15, 30), dt.UTC)


def test_parse_since() -> None:
    assert parse_since("7d", NOW) == TODAY - dt.timedelta(days=7)
    assert parse_since("24h", NOW) == TODAY - dt.timedelta(days=1)
    assert parse_since("2w", NOW) == TODAY - dt.timedelta(days=14)
    assert parse_since(" 2026-11-01 ", NOW) == dt.date(2026, 11, 1)
    for bad, words in [
        ("yesterday", "neither a period nor a date"),
        ("0d", "positive"),
        ("2026-12-01", "after the report.s last day"),
        ("900d", "more than"),
        ("7x", "neither"),
        ("2026-02-30", "not a day of the calendar"),
    ]:
        with pytest.raises(InputError, match=words) as info:
            parse_since(bad, NOW)
        assert info.value.field == "since"


@pytest.mark.parametrize(
    "bad",
    [
        "\u0663d",  # ARABIC-INDIC DIGIT THREE: \d and int() read it as 3
        "\uff17d",  # FULLWIDTH DIGIT SEVEN
        "2\u0664h",
        "20261125",  # the basic ISO form, which date.fromisoformat reads
        "2026-W48",  # week dates too
        "2026-W48-1",
        "2026-11-\u0662\u0665",
    ],
)
def test_parse_since_takes_only_the_stated_forms(bad: str) -> None:
    # The README, the CLI's help and /monitor's schema state 24h/7d/2w and YYYY-MM-DD;
    # these were read as other days by the CLI and report_since (/monitor refused them).
    with pytest.raises(InputError, match="YYYY-MM-DD such as 2026-11-30") as info:
        parse_since(bad, NOW)
    assert info.value.field == "since" and "neither a period nor a date" in info.value.message


def test_report_rates_mix_and_jumps(db: Database) -> None:
    seed_monitoring(db)
    with db.read() as session:
        report = build_report(
            session, since=TODAY - dt.timedelta(days=6), until=TODAY, thresholds=Thresholds()
        )
    assert report.days[0] == TODAY - dt.timedelta(days=6) and report.days[-1] == TODAY
    assert report.versions == ["m2"]  # m1 stopped before the window

    today = report.cell("m2", TODAY)
    assert today is not None
    assert today.rate.classified == 300 + 300 + 300 + 50
    assert today.rate.fixes == 3 + 30 + 20 + 5
    assert today.types == {"Dealer": 634, "Placeholder": 316}
    assert today.colors["(none)"] == 316 and today.colors["Red"] + today.colors["Blue"] == 634

    by_id = {a.advertiser_id: a for a in report.advertisers}
    assert set(by_id) == {"steady", "jumpy", "newcomer", "small"}
    assert [a.advertiser_id for a in report.jumped] == ["jumpy", "newcomer"]
    jumpy, newcomer = by_id["jumpy"], by_id["newcomer"]
    assert jumpy.recent.rate == pytest.approx(0.10)
    assert jumpy.baseline.rate == pytest.approx(0.01) and jumpy.baseline_source == "own"
    assert newcomer.baseline_source == "all advertisers"
    assert report.fleet_baseline.fixes == 57 + 57 and report.fleet_baseline.classified == 12350
    steady = by_id["steady"]
    assert not steady.jumped and steady.verdict.startswith("steady")
    assert steady.total.rate == pytest.approx(0.01)
    assert len(steady.daily) == 7
    assert not by_id["small"].jumped and "too few" in by_id["small"].verdict


def test_report_per_version_and_advertiser_filter(db: Database) -> None:
    seed_monitoring(db)
    with db.read() as session:
        report = build_report(
            session,
            since=SWITCH - dt.timedelta(days=2),
            until=TODAY,
            thresholds=Thresholds(),
            advertiser="steady",
        )
    assert report.versions == ["m1", "m2"]
    before = report.cell("m1", SWITCH - dt.timedelta(days=1))
    after = report.cell("m2", SWITCH)
    assert before is not None and after is not None
    assert (before.rate.classified, before.rate.fixes) == (300, 3)
    assert (after.rate.classified, after.rate.fixes) == (300, 3)
    assert [a.advertiser_id for a in report.advertisers] == ["steady"]
    assert report.total.classified == 300 * len(report.days)


def test_an_image_fixed_again_the_same_day_counts_once(db: Database) -> None:
    keys = [add_image(db, model_version="m2").image_key for _ in range(3)]
    noon = dt.datetime.combine(TODAY, dt.time(12), dt.UTC)
    yesterday = noon - dt.timedelta(days=1)

    def fix(key: str, at: dt.datetime) -> FixAuditRow:
        return FixAuditRow(
            image_key=key,
            advertiser_id="dealer-3",
            scope="advertiser",
            user="ann",
            changes={"color": {"from": "Red", "to": "Green"}},
            comment=None,
            created_at=at,
        )

    with db.write() as session:
        record_counts(session, TODAY, "dealer-3", rollup(answers(3, "m2")))
        record_counts(session, TODAY - dt.timedelta(days=1), "dealer-3", rollup(answers(3, "m2")))
        # Three fixes of each image today (type, color, the color corrected), and one
        # image fixed yesterday too: a fix of that day.
        session.add_all(
            [fix(key, noon + dt.timedelta(minutes=i)) for key in keys for i in range(3)]
            + [fix(keys[0], yesterday)]
        )
    with db.read() as session:
        report = build_report(
            session, since=TODAY - dt.timedelta(days=1), until=TODAY, thresholds=Thresholds()
        )
    [dealer] = report.advertisers
    assert dealer.daily[TODAY].fixes == 3 and dealer.daily[TODAY].rate == 1.0  # not 300 %
    assert dealer.total.fixes == 4 and dealer.total.classified == 6
    today = report.cell("m2", TODAY)
    assert today is not None and today.rate.fixes == 3


def test_a_fix_stays_with_the_model_it_corrected_after_a_reclassification(
    db: Database,
) -> None:
    # Two images answered by m1 and fixed; then m2 is promoted and re-classifies them.
    # m2 made no mistake the staff saw: the fixes are m1's.
    keys = [add_image(db, model_version="m1").image_key for _ in range(2)]
    noon = dt.datetime.combine(TODAY, dt.time(12), dt.UTC)
    with db.write() as session:
        record_counts(session, TODAY, "dealer-4", rollup(answers(10, "m1")))
        for key in keys:
            apply_fix(
                session,
                image_key=key,
                advertiser_id="dealer-4",
                author=Author("ann"),
                scope="advertiser",
                image_type="Stock",
                color=None,
                comment=None,
                clock=FakeClock(noon),
            )
    with db.write() as session:
        for key in keys:
            image = session.get(ImageRow, key)
            assert image is not None
            image.model_version = "m2"
        # A fix recorded before the model version was kept with it: the image's version.
        session.add(
            FixAuditRow(
                image_key=keys[0],
                advertiser_id="dealer-5",
                scope="advertiser",
                user="bob",
                changes={"image_type": {"from": "Dealer", "to": "Stock"}},
                comment=None,
                created_at=noon,
            )
        )
    with db.read() as session:
        report = build_report(session, since=TODAY, until=TODAY, thresholds=Thresholds())
    m1, m2 = report.cell("m1", TODAY), report.cell("m2", TODAY)
    assert m1 is not None and m1.rate.fixes == 2 and m1.rate.classified == 10
    assert m2 is not None and m2.rate.fixes == 1  # dealer-5's, recorded without a version


def test_thresholds_change_the_verdict(db: Database) -> None:
    seed_monitoring(db)
    strict = Thresholds(min_ratio=20.0)
    with db.read() as session:
        report = build_report(session, since=TODAY, until=TODAY, thresholds=strict)
    assert report.jumped == []
    assert "20×" in strict.explain()


def test_empty_store_gives_an_empty_report(db: Database) -> None:
    with db.read() as session:
        report = build_report(session, since=TODAY, until=TODAY, thresholds=Thresholds())
    assert report.advertisers == [] and report.versions == [] and report.total.rate is None
