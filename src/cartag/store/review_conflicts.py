"""Who said what about a flagged item: the conflict a dataset build recorded in its provenance.

When the same image (or a near-duplicate) comes with labels that disagree, the build
flags it and keeps every source's labels in ``provenance["conflict"]``: a list of
``{"labels": [image_type, color], "source": ..., "advertiser_id": ..., "scope": ...,
"user": ...}`` (see :mod:`cartag.training.datasets.filters`). The review page shows them
as "dealer-42 said Black · dealer-77 said Grey", and the queues file the item under the
label the sources disagree on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

FIELDS: Final[tuple[str, str]] = ("image_type", "color")


@dataclass(frozen=True)
class Claim:
    """One source's labels in a conflict.

    Attributes:
        who: The advertiser, ``global fix (user)``, ``this version`` (the label the item
            had before the build) or the import's source.
        image_type: The type it gave, if any.
        color: The color it gave, if any.
    """

    who: str
    image_type: str | None
    color: str | None


def _labels(claim: Any) -> tuple[str | None, str | None] | None:
    if not isinstance(claim, dict):
        return None
    labels = claim.get("labels")
    if not isinstance(labels, list) or len(labels) != len(FIELDS):
        return None
    kind, color = labels
    return (kind if isinstance(kind, str) else None, color if isinstance(color, str) else None)


def _who(claim: dict[str, Any]) -> str:
    if claim.get("advertiser_id"):
        return str(claim["advertiser_id"])
    if claim.get("scope") == "global":
        return f"global fix ({claim['user']})" if claim.get("user") else "global fix"
    if claim.get("source") == "version":
        return "this version"
    return str(claim.get("path") or claim.get("url") or claim.get("source") or "unknown source")


def conflict_claims(provenance: dict[str, Any]) -> list[Claim]:
    """The sources of a flagged item's conflict and what each said (empty: none recorded)."""
    claims = provenance.get("conflict")
    if not isinstance(claims, list):
        return []
    out = []
    for claim in claims:
        labels = _labels(claim)
        if labels is not None:
            out.append(Claim(_who(claim), *labels))
    return out


def conflict_fields(provenance: dict[str, Any]) -> tuple[str, ...]:
    """The labels a flagged item's sources disagree on; both when that is not recorded."""
    claims = conflict_claims(provenance)
    disagree = [
        name
        for index, name in enumerate(FIELDS)
        if len({(c.image_type, c.color)[index] for c in claims} - {None}) > 1
    ]
    return tuple(disagree) or FIELDS
