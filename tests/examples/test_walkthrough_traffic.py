"""examples/walkthrough_traffic.py: which photos each advertiser sends, which fixes it makes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "walkthrough_traffic.py"


@pytest.fixture(scope="module")
def traffic() -> ModuleType:
    spec = importlib.util.spec_from_file_location("walkthrough_traffic", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _result(key: str, color: str | None, image_type: str = "Dealer") -> dict[str, Any]:
    return {"image_key": key, "status": "classified", "image_type": image_type, "color": color}


def test_read_pick_and_assign(traffic: ModuleType, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    rows = [
        f"vcr-train/{c}/{c.lower()}-{i}.jpg,{c},Dealer,0.0"
        for c in ("Red", "Blue")
        for i in range(5)
    ]  # noqa: E501
    labels.write_text("path,color,weak_type,white_border_fraction\n" + "\n".join(rows) + "\n")
    photos = traffic.read_photos(labels)
    assert len(photos) == 10 and photos[0].color == "Red" and photos[-1].color == "Blue"
    picked = traffic.pick(photos, 4)
    assert [p.color for p in picked] == ["Red", "Red", "Blue", "Blue"]
    assert traffic.pick(photos, 50) == photos
    plan = traffic.assign(picked, ("a", "b"), shared=1)
    assert plan["a"] == [picked[0], picked[2]] and plan["b"] == [picked[0], picked[1], picked[3]]


def test_fixes_correct_model_mistakes_and_make_one_conflict(traffic: ModuleType) -> None:
    photo = traffic.Photo
    red, blue, grey = photo("r.jpg", "Red"), photo("b.jpg", "Blue"), photo("g.jpg", "Grey")
    shared = photo("s.jpg", "Black")
    answers = {
        "a": [
            (red, _result("k-red", "Pink")),  # wrong: global fix
            (blue, _result("k-blue", "Blue")),  # right: left alone
            (shared, _result("k-shared", "Black")),
            (photo("p.jpg", "Red"), _result("k-ph", None, "Placeholder")),  # no color to fix
        ],
        "b": [
            (grey, _result("k-grey", "White")),  # wrong: b's own override
            (photo("x.jpg", "Red"), {"image_key": None, "status": "skipped"}),
            (shared, _result("k-shared", "Black")),
        ],
    }
    fixes = traffic.plan_fixes(answers, ("a", "b"), global_fixes=5, overrides=5)
    made = [
        (f.image_key, f.body["advertiser_id"], f.body["scope"], f.body.get("color")) for f in fixes
    ]  # noqa: E501
    assert made == [
        ("k-red", "a", "global", "Red"),
        ("k-grey", "b", "advertiser", "Grey"),
        ("k-shared", "a", "advertiser", "Black"),
        ("k-shared", "b", "advertiser", "Grey"),
    ]
    assert all(f.body["on_behalf_of"] == "walkthrough" for f in fixes)
    limited = traffic.plan_fixes(answers, ("a", "b"), global_fixes=0, overrides=0)
    assert [f.image_key for f in limited] == ["k-shared", "k-shared"]
