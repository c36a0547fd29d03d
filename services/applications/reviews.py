"""Reviewer and applicant actions on an application's review: decide, supplement, withdraw, object, resolve an
objection, revoke a recognition. Each checks who may act (``service``), then sends one Update to the
application's review workflow (``workflow_client.send_update``), whose validators refuse a bad action before
it enters history (wrong level or region: 403; stage not current or already decided: 409).

With an Idempotency-Key an action happens once per caller (``services.idempotency.once``): a retry gets the
stored answer, and the Update's id is made of the caller's identity and the key, so the workflow takes it once
too. Every check runs before any replay. The stored answer is keyed by the application the action found
(``POST /applications/{id}/{update}``), which for an objection's resolution or a revocation is known only
after a lookup - so the actions call ``once`` here rather than in the router."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from services.applications import imported, service
from services.applications import workflow_client as wf
from services.applications.models import Recognition
from services.applications.schemas import (
    DecisionCreate,
    ObjectionCreate,
    ObjectionFiled,
    ReReviewCreate,
    ReReviewFiledRead,
    ResolutionCreate,
    ReviewStateRead,
    RevocationCreate,
    SupplementCreate,
    WithdrawCreate,
)
from services.auth import CurrentUser, Role
from services.contracts import (
    DecisionRequest,
    ObjectionRequest,
    ObjectionResolution,
    ReReviewRequest,
    ReviewUpdate,
    RevokeRequest,
    SupplementRequest,
    WithdrawRequest,
)
from services.idempotency import once


@dataclass(frozen=True, slots=True)
class Actions:
    """What one request may do to reviews: the caller, the request's session and Idempotency-Key (``key``)."""

    session: AsyncSession
    temporal: Client
    user: CurrentUser
    key: str | None

    async def decide(self, application_id: uuid.UUID, data: DecisionCreate) -> Any:
        self.user.require(Role.reviewer)
        request = DecisionRequest(
            actor=service.actor_of(self.user),
            stage=data.stage,
            decision=data.decision,
            reason=data.reason,
            internal_note=data.internal_note,
            supplement_due_at=data.supplement_due_at,
        )

        async def unclaimed() -> None:  # deciding a task another reviewer holds is a 409
            await service.check_claim(
                self.session, user=self.user, application_id=application_id, now=datetime.now(UTC)
            )

        return await self._act(application_id, "decide", request, data, check=unclaimed)

    async def supplement(self, application_id: uuid.UUID, data: SupplementCreate) -> Any:
        self.user.require(Role.enterprise)
        await service.check_supplement(
            self.session,
            user=self.user,
            application_id=application_id,
            evidence=data.evidence,
            metrics=data.metrics,
        )
        request = SupplementRequest(
            actor=service.actor_of(self.user),
            note=data.note,
            evidence=data.evidence,
            metrics=data.metrics.model_dump(mode="json") if data.metrics is not None else None,
        )
        return await self._act(application_id, "supplement", request, data)

    async def withdraw(self, application_id: uuid.UUID, data: WithdrawCreate) -> Any:
        self.user.require(Role.enterprise)
        request = WithdrawRequest(actor=service.actor_of(self.user), reason=data.reason)
        return await self._act(application_id, "withdraw", request, data)

    async def object_to(self, application_id: uuid.UUID, data: ObjectionCreate) -> Any:
        """File an objection (anyone may, to an application on public notice); the answer names it."""

        async def file() -> ObjectionFiled:
            objection_id = uuid.uuid4()
            request = ObjectionRequest(
                actor=service.actor_of(self.user), objection_id=objection_id, reason=data.reason
            )
            state = await self._send(application_id, "object", request)
            return ObjectionFiled(objection_id=objection_id, state=state)

        return await once(
            self.session,
            self.user,
            self.key,
            endpoint=f"POST /applications/{application_id}/objections",
            payload=data,
            status_code=201,
            authorize=lambda: service.authorize_objection(
                self.session, user=self.user, application_id=application_id
            ),
            act=file,
        )

    async def resolve_objection(self, objection_id: uuid.UUID, data: ResolutionCreate) -> Any:
        self.user.require(Role.reviewer)
        _, application = await service.objection_application(
            self.session, user=self.user, objection_id=objection_id
        )
        request = ObjectionResolution(
            actor=service.actor_of(self.user),
            objection_id=objection_id,
            upheld=data.upheld,
            reason=data.reason,
        )
        return await self._act(application.id, "resolve_objection", request, data)

    async def revoke(self, recognition_id: uuid.UUID, data: RevocationCreate) -> Any:
        recognition = await service.revocable_recognition(
            self.session, user=self.user, recognition_id=recognition_id
        )
        if recognition.application_id is None:  # imported from a list: no review workflow holds it
            return await imported.revoke(
                self.session, self.temporal, user=self.user, key=self.key, recognition=recognition, data=data
            )
        request = RevokeRequest(
            actor=service.actor_of(self.user), reason=data.reason, revoked_for=data.revoked_for
        )
        return await self._act(recognition.application_id, "revoke", request, data)

    async def file_re_review(self, recognition_id: uuid.UUID, data: ReReviewCreate) -> Any:
        """The re-review of the caller's recognition, with its current figures: the recognition's workflow
        refuses it (409) unless its window is open and no re-review is filed yet."""

        async def authorize() -> Recognition:
            return await service.renewable_recognition(
                self.session,
                user=self.user,
                recognition_id=recognition_id,
                metrics=data.metrics,
                evidence=data.evidence,
            )

        async def file() -> ReReviewFiledRead:
            recognition = await authorize()
            request = ReReviewRequest(
                actor=service.actor_of(self.user),
                metrics=data.metrics.model_dump(mode="json"),
                evidence=data.evidence,
            )
            assert recognition.application_id is not None  # renewable_recognition refuses imported ones
            filed = await wf.file_re_review(
                self.temporal,
                application_id=recognition.application_id,
                request=request,
                update_id=f"file_re_review-{self.user.identity}-{self.key}" if self.key else None,
            )
            return ReReviewFiledRead.model_validate(filed.model_dump())

        return await once(
            self.session,
            self.user,
            self.key,
            endpoint=f"POST /recognitions/{recognition_id}/re-review",
            payload=data,
            status_code=201,
            authorize=authorize,
            act=file,
        )

    async def _act(
        self,
        application_id: uuid.UUID,
        name: ReviewUpdate,
        arg: Any,
        data: BaseModel,
        *,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Send one action to the application's workflow once per key (``service.authorize_action`` first;
        `check`, if any, before a fresh action is sent - never before a replay)."""

        async def act() -> ReviewStateRead:
            if check is not None:
                await check()
            return await self._send(application_id, name, arg)

        return await once(
            self.session,
            self.user,
            self.key,
            endpoint=f"POST /applications/{application_id}/{name}",
            payload=data,
            authorize=lambda: service.authorize_action(
                self.session, user=self.user, application_id=application_id
            ),
            act=act,
        )

    async def _send(self, application_id: uuid.UUID, name: ReviewUpdate, arg: Any) -> ReviewStateRead:
        state = await wf.send_update(
            self.temporal,
            application_id=application_id,
            name=name,
            arg=arg,
            update_id=f"{name}-{self.user.identity}-{self.key}" if self.key else None,
        )
        return ReviewStateRead.model_validate(state.model_dump())
