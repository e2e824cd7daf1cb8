"""What an API key scoped to advertisers may see and do (see :mod:`cartag.store.apikeys`).

A scoped key acts only for its advertisers: it classifies for them, sees their images
(an image is theirs when their requests named it or a fix was made in their name) and
makes their overrides. Another advertiser's image answers 404, exactly as an unknown
key does, so a scoped key learns nothing about images it may not see. Global fixes and
the conflicts between advertisers need an unscoped key (403).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from cartag.errors import InputError, NotFoundError
from cartag.store import advertisers as advertiser_repo
from cartag.store import fixes as fix_repo
from cartag.store.apikeys import Principal


def check_image(session: Session, principal: Principal, image_key: str) -> None:
    """Raise NotFoundError when a scoped key may not see the image (unscoped: any)."""
    if principal.scoped and not advertiser_repo.uses_image(
        session, principal.advertisers, image_key
    ):
        raise NotFoundError(
            f"no image with key {image_key!r} among the images of {principal.scope_text()}"
        )


def answer_advertiser(principal: Principal, advertiser_id: str) -> str:
    """Whose overrides an answer applies: the one named, or a one-advertiser key's own.

    Raises:
        InputError: A key scoped to several advertisers named none.
        PermissionDeniedError: The key may not act for the advertiser named.
    """
    if not advertiser_id and principal.scoped:
        if len(principal.advertisers) > 1:
            raise InputError(
                f"name the advertiser (one of {principal.scope_text()})", field="advertiser_id"
            )
        return next(iter(principal.advertisers))
    if advertiser_id:
        principal.require_advertiser(advertiser_id)
    return advertiser_id


def check_fix(principal: Principal, scope: str, advertiser_id: str) -> None:
    """A scoped key makes only its advertisers' overrides.

    Raises:
        PermissionDeniedError: A global fix by a scoped key, or an override for an
            advertiser it does not act for.
    """
    if scope == fix_repo.GLOBAL:
        principal.require_unscoped("global fixes (they change every advertiser's answers)")
    principal.require_advertiser(advertiser_id)
