"""Play a scraper and a fixer against a running cartag, for the README walkthrough.

Classifies real photos of the shared data set as two advertisers through
``POST /v1/classify`` (the photos served by a local HTTP server), then makes
manual fixes through ``PUT /v1/images/{key}/fix``:

- global fixes where the model's color disagrees with the photo's folder label
  (a person checking the answers would correct exactly those);
- advertiser overrides: the second advertiser corrects the colors of its own
  photos the same way, for itself only;
- one conflict: both advertisers list one photo and override its color
  differently, so the next dataset flags it for review.

Usage (the image server serves the folder that holds ``vcr-train/``)::

    python -m http.server 8765 --bind 127.0.0.1 --directory ../shared/data &
    .venv/bin/python examples/walkthrough_traffic.py --key "$KEY" \\
        --labels ../shared/data/vcr-train/labels.csv --images http://127.0.0.1:8765

The server needs ``CARTAG_ALLOWED_NETWORKS=127.0.0.0/8`` to fetch from loopback.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BATCH = 100


@dataclass(frozen=True)
class Photo:
    """One row of the shared data's ``labels.csv``: its path and folder color."""

    path: str
    color: str


@dataclass(frozen=True)
class Fix:
    """One ``PUT /v1/images/{key}/fix`` to make."""

    image_key: str
    body: dict[str, Any]


def read_photos(labels_csv: Path) -> list[Photo]:
    """Rows of ``labels.csv`` (``path,color,weak_type,...``), in file order."""
    with labels_csv.open(newline="", encoding="utf-8") as handle:
        return [Photo(row["path"], row["color"]) for row in csv.DictReader(handle)]


def pick(photos: Sequence[Photo], count: int) -> list[Photo]:
    """``count`` photos spread evenly over the (folder-sorted) list, so every color is in."""
    if count >= len(photos):
        return list(photos)
    step = len(photos) / count
    return [photos[int(i * step)] for i in range(count)]


def assign(
    photos: Sequence[Photo], advertisers: tuple[str, str], shared: int
) -> dict[str, list[Photo]]:
    """Alternate photos between the two advertisers; the first ``shared`` go to both."""
    first, second = advertisers
    plan: dict[str, list[Photo]] = {first: [], second: []}
    for i, photo in enumerate(photos):
        if i < shared:
            plan[first].append(photo)
            plan[second].append(photo)
        else:
            plan[advertisers[i % 2]].append(photo)
    return plan


def plan_fixes(
    answers: dict[str, list[tuple[Photo, dict[str, Any]]]],
    advertisers: tuple[str, str],
    *,
    global_fixes: int,
    overrides: int,
) -> list[Fix]:
    """Choose the fixes a careful person would make after reading the answers.

    Args:
        answers: Per advertiser, each photo with its classify result (``image_key``,
            ``image_type``, ``color``, ``status``).
        advertisers: The two advertiser ids; the second one makes the overrides.
        global_fixes: At most this many global color corrections.
        overrides: At most this many color overrides by the second advertiser.

    Returns:
        The fixes, global ones first, then the overrides, then the conflicting pair
        (when a photo was listed by both advertisers).
    """
    first, second = advertisers
    usable = {
        adv: [(p, r) for p, r in rows if r.get("status") != "skipped" and r.get("image_key")]
        for adv, rows in answers.items()
    }
    fixes: list[Fix] = []
    fixed: set[str] = set()
    for photo, result in usable.get(first, []):
        if len(fixes) >= global_fixes:
            break
        if result.get("image_type") == "Dealer" and result.get("color") not in (None, photo.color):
            key = str(result["image_key"])
            fixes.append(_fix(key, first, "global", color=photo.color, comment="folder label"))
            fixed.add(key)
    made = 0
    for photo, result in usable.get(second, []):
        key = str(result["image_key"])
        if made >= overrides or key in fixed:
            continue
        if result.get("image_type") == "Dealer" and result.get("color") not in (None, photo.color):
            fixes.append(_fix(key, second, "advertiser", color=photo.color, comment="as listed"))
            fixed.add(key)
            made += 1
    both = {str(r["image_key"]): p for p, r in usable.get(first, [])}
    for photo, result in usable.get(second, []):
        key = str(result["image_key"])
        if key in both and key not in fixed and photo.color in ("Blue", "Grey", "Black"):
            other = "Grey" if photo.color != "Grey" else "White"
            fixes.append(_fix(key, first, "advertiser", color=photo.color, comment="as listed"))
            fixes.append(_fix(key, second, "advertiser", color=other, comment="as listed"))
            break
    return fixes


def _fix(key: str, advertiser: str, scope: str, comment: str, **labels: str) -> Fix:
    body: dict[str, Any] = {
        "advertiser_id": advertiser,
        "on_behalf_of": "walkthrough",
        "scope": scope,
        "comment": comment,
        **labels,
    }
    return Fix(key, body)


def _batches(items: Sequence[Photo], size: int) -> Iterable[Sequence[Photo]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def classify(
    client: httpx.Client, advertiser: str, photos: Sequence[Photo], images_url: str
) -> list[tuple[Photo, dict[str, Any]]]:
    """Classify ``photos`` as ``advertiser``; each photo with its result, in order."""
    out: list[tuple[Photo, dict[str, Any]]] = []
    for batch in _batches(photos, BATCH):
        body = {
            "advertiser_id": advertiser,
            "images": [{"url": f"{images_url.rstrip('/')}/{p.path}"} for p in batch],
        }
        response = client.post("/v1/classify", json=body)
        response.raise_for_status()
        out.extend(zip(batch, response.json()["results"], strict=True))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="API key with classifier+fixer rights.")
    parser.add_argument("--labels", type=Path, required=True, help="vcr-train/labels.csv")
    parser.add_argument("--images", required=True, help="URL of the folder holding vcr-train/")
    parser.add_argument("--count", type=int, default=400, help="Photos to classify.")
    parser.add_argument("--shared", type=int, default=20, help="Photos both advertisers list.")
    parser.add_argument("--advertisers", default="dealer-42,dealer-77")
    parser.add_argument("--global-fixes", type=int, default=10)
    parser.add_argument("--overrides", type=int, default=5)
    args = parser.parse_args(argv)
    names = args.advertisers.split(",")
    if len(names) != 2 or not all(names):
        parser.error("--advertisers: give two ids separated by a comma")
    advertisers = (names[0], names[1])
    photos = pick(read_photos(args.labels), args.count)
    headers = {"Authorization": f"Bearer {args.key}"}
    with httpx.Client(base_url=args.server, headers=headers, timeout=300) as client:
        answers: dict[str, list[tuple[Photo, dict[str, Any]]]] = {}
        for advertiser, mine in assign(photos, advertisers, args.shared).items():
            answers[advertiser] = classify(client, advertiser, mine, args.images)
            statuses: dict[str, int] = {}
            for _, result in answers[advertiser]:
                statuses[result["status"]] = statuses.get(result["status"], 0) + 1
            print(f"{advertiser}: classified {len(mine)} images {statuses}")
        fixes = plan_fixes(
            answers, advertisers, global_fixes=args.global_fixes, overrides=args.overrides
        )
        for fix in fixes:
            response = client.put(f"/v1/images/{fix.image_key}/fix", json=fix.body)
            response.raise_for_status()
            labels = {k: fix.body[k] for k in ("image_type", "color") if k in fix.body}
            print(f"fix {fix.body['scope']:<10} {fix.body['advertiser_id']:<10} {labels}")
    print(f"{len(fixes)} fixes made")
    return 0


if __name__ == "__main__":
    sys.exit(main())
