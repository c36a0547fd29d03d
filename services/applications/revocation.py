"""Revoking a recognition, and "fraud revokes every title" (../shared/DOMAIN.md).

One write for both kinds of recognition: an application's (``records.change_recognition``, the activity its
review workflow's ``revoke`` Update runs) and an imported one (``imported.revoke``, in the request). A
revocation for fraud revokes, in the same transaction, every other recognition the enterprise holds - any
program, tier or source, one held past its validity while its re-review is undecided too - at the same moment
and for fraud, each with its reason naming the certificate whose revocation caused it, its own
``recognition.revoked`` event and, for an application's, a row in that application's history. All of them or
none: the caller's one transaction commits them. The same transaction bars the enterprise from its
cultivation pools' benefits (``services.pools.service.bar_enterprise``: for each program's fraud bar, as
applying is barred). The callers then tell each one's benefits workflow to stop and each application's review
workflow that its title is gone (signal ``revoked``).

The titles revoked together share the revocation's moment (``revoked_at``), so a retried activity or a
repeated request finds the same ones again (``revoked_with``) without a column of its own.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import announce
from services.applications import repository as repo
from services.applications.models import Recognition, Transition
from services.attributes import fields_of
from services.contracts import Actor, RevokedFor, RevokedTitle, revoked_with_reason
from services.pools.service import bar_enterprise


async def revoke(
    session: AsyncSession,
    recognition: Recognition,
    *,
    actor: Actor,
    reason: str,
    revoked_for: RevokedFor,
    at: datetime,
    told: bool,
) -> list[RevokedTitle]:
    """Revoke `recognition` if it is still active (its event with it), and for fraud every other title of its
    enterprise too, and bar its pools' benefits from `at`; the other titles revoked with it (none for another
    ground, or when it was no longer active: a concurrent revocation for fraud got there first).

    ``told``: the caller tells the revoked titles' workflows durably (a review workflow), so they are marked
    told now (``stop_sent_at``); else (a request) ``mark_told`` marks each once its signals are taken, and
    what is never marked is told by ``tell_untold``."""
    if revoked_for == "fraud":
        await repo.titles_for_update(session, recognition.uscc)  # reads `recognition` afresh, locked
    if recognition.status != "active":
        return []
    _revoked(recognition, actor=actor, reason=reason, revoked_for=revoked_for, at=at, told=told)
    await session.flush()
    await announce.revoked(session, recognition, reason)
    if revoked_for != "fraud":
        return []
    also_revoked = await _revoke_other_titles(session, recognition, actor=actor, told=told)
    await bar_enterprise(
        session,
        uscc=recognition.uscc,
        since=at,
        reason=f"certificate {recognition.certificate_no} revoked for fraud: {reason}",
        recognition_id=recognition.id,
    )
    return also_revoked


async def revoked_with(session: AsyncSession, recognition: Recognition) -> list[RevokedTitle]:
    """The titles a revocation for fraud of `recognition` revoked with it (none if it was not one)."""
    if recognition.status != "revoked" or recognition.revoked_for != "fraud":
        return []
    return [title(other) for other in await repo.revoked_together(session, recognition)]


def title(recognition: Recognition) -> RevokedTitle:
    return RevokedTitle(
        recognition_id=recognition.id,
        **fields_of(recognition, ("certificate_no", "program", "tier", "application_id")),
    )


def _revoked(
    recognition: Recognition, *, actor: Actor, reason: str, revoked_for: RevokedFor, at: datetime, told: bool
) -> None:
    recognition.status = "revoked"
    recognition.revoked_reason = reason
    recognition.revoked_by = actor.sub
    recognition.revoked_at = at
    recognition.revoked_for = revoked_for
    recognition.stop_sent_at = at if told else None


async def _revoke_other_titles(
    session: AsyncSession, revoked: Recognition, *, actor: Actor, told: bool
) -> list[RevokedTitle]:
    assert revoked.revoked_at is not None
    reason = revoked_with_reason(revoked.certificate_no, revoked.revoked_reason or "")
    titles = []
    for other in await repo.titles_for_update(session, revoked.uscc):  # locked already: no wait
        if other.id == revoked.id or other.status != "active":
            continue
        _revoked(other, actor=actor, reason=reason, revoked_for="fraud", at=revoked.revoked_at, told=told)
        if other.application_id is not None:  # its application's history says so, as its own revocation would
            session.add(
                Transition(
                    application_id=other.application_id,
                    event_key=f"revoked-with-{revoked.id}-{other.id}",
                    actor=actor.sub,
                    role=actor.role,
                    action="recognition_revoked",
                    from_status="recognized",
                    to_status="recognized",
                    reason=reason,
                    at=revoked.revoked_at,
                )
            )
        await session.flush()
        await announce.revoked(session, other, reason)
        titles.append(title(other))
    return titles
