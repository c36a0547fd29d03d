"""The review workflow: one per application (id ``review-{application_id}``).

screening -> in_review (municipal -> provincial [-> national]) <-> returned -> public_notice -> recognized,
or ineligible / rejected / withdrawn. Reviewer actions are Updates with validators; every state change is
written by one activity in one transaction (application row, review-task read model, audit row), so the
queue is right the moment an Update returns. After recognition the workflow starts the benefits workflow
and keeps the recognition: the program's ``re_review_window`` before expiry a timer opens its re-review
(复核), in which the enterprise files current figures and evidence (Update ``file_re_review``, which starts
the re-review's own review as a child); the recognition holds while that is undecided, is extended by the
validity on approval, and ends at the later of expiry and the decision otherwise; without a filing it lapses
at expiry.
Workflows started before re-review windows (RE_REVIEW_WINDOW) open a re-review of the old figures at expiry.
A re-review's own workflow (``re_review_of``) ends at its decision: its parent keeps the recognition.
A revocation (Update ``revoke``) for fraud revokes every other title of the enterprise in its activity's
transaction (FRAUD_REVOKES_EVERY_TITLE); the workflow then stops their benefits and signals ``revoked`` to the
review workflows keeping them, which end their lifecycle as at a revocation of their own.

Reminders are timers too: the program's ``supplement_reminder`` before a returned application's supplement is
due, and its ``expiry_reminder`` before a recognition expires, an activity tells the enterprise
(``application.supplement_due_soon``, ``recognition.expiring``) - once per return, once per recognition, and
not at all when the supplement arrives (or the recognition is revoked) first. A window already shorter than
its reminder when it opens (a supplement due in two days, with a three-day reminder) gets none: the event that
opened it (``application.returned``, ``application.recognized``) gave the date.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict, Unpack

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError

from workflows.retries import until_done

with workflow.unsafe.imports_passed_through():
    from services.attributes import fields_of
    from services.contracts import (
        STAGE,
        TERMINAL,
        Actor,
        BenefitsExtension,
        BenefitsInput,
        BenefitsStop,
        DecisionRequest,
        EscalationInput,
        ExpiryReminder,
        FraudBar,
        FraudBarCheck,
        ObjectionRequest,
        ObjectionResolution,
        ObjectionUpdate,
        OpenTask,
        PanelClose,
        PanelDraw,
        PanelDrawn,
        PanelPolicy,
        PanelScore,
        PanelScored,
        PanelVerdict,
        RecognitionChange,
        RecognitionChanged,
        RecognitionOutcome,
        RecognizeInput,
        ReReviewFiled,
        ReReviewFiling,
        ReReviewInput,
        ReReviewOutcome,
        ReReviewRequest,
        ReReviewWindow,
        ReviewInput,
        ReviewState,
        RevokedTitle,
        RevokeRequest,
        ScoreRequest,
        ScreenAndEnterInput,
        ScreenInput,
        ScreenOutcome,
        Stage,
        Status,
        SupplementContent,
        SupplementReminder,
        SupplementRequest,
        TitleRevoked,
        TransitionInput,
        WithdrawRequest,
        revoked_with_reason,
        search_attributes,
    )
    from services.vocabulary import covers_region

SYSTEM = Actor(sub="system", role="system")
# Patch: screening and entering the first stage became one local activity (screen_and_enter).
SCREEN_IN_ONE_STEP = "screen-in-one-local-activity"
# Patch: reminders (timers) before a supplement is due and before a recognition expires.
REMINDERS = "reminders-before-deadlines"
# Patch: the Stage search attribute follows the review (services.contracts.STAGE).
STAGE_SEARCH_ATTRIBUTE = "stage-search-attribute"
# Patch: a re-review window before expiry, filed with current figures; the recognition extended on approval.
RE_REVIEW_WINDOW = "re-review-window-before-expiry"
# Patch: a stage the program gives an expert panel is decided by a panel drawn from the pool
# (services/applications/panels.py); asked only at such a stage, which no workflow before it had in its input.
EXPERT_PANELS = "expert-panels"
# Patch: a revocation for fraud revokes every title of the enterprise (services/applications/revocation.py);
# its revoke Update reads what else the activity revoked and tells their workflows. Asked only when revoking
# for fraud: a history revoked for fraud before it replays without the signals.
FRAUD_REVOKES_EVERY_TITLE = "fraud-revokes-every-title"
# Patch: at the notice's end an enterprise barred after a revocation for fraud (found while this application
# was in review) is rejected instead of recognised; histories before it replay without the check.
FRAUD_BAR_AT_RECOGNITION = "fraud-bar-at-recognition"
PANEL = Actor(sub="expert-panel", role="system")
ACTIVITY_TIMEOUT = timedelta(seconds=30)
RETRY = until_done(timedelta(seconds=1), timedelta(seconds=30), but=())
OPEN: frozenset[str] = frozenset({"screening", "in_review", "returned", "public_notice"})


def _forbidden(message: str) -> ApplicationError:
    return ApplicationError(message, type="Forbidden", non_retryable=True)


def _conflict(message: str) -> ApplicationError:
    return ApplicationError(message, type="Conflict", non_retryable=True)


def _unprocessable(message: str) -> ApplicationError:
    return ApplicationError(message, type="Unprocessable", non_retryable=True)


covers = covers_region  # the region rule (services.vocabulary)


async def _run(activity: str, arg: Any, *, result_type: type[Any] | None = None) -> Any:
    """One activity, with the review's timeout and retry policy (failures the worker's interceptor marks
    non-retryable end it at once)."""
    return await workflow.execute_activity(
        activity, arg, result_type=result_type, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY
    )


class _Details(TypedDict, total=False):
    """What a transition records beside its action: the reviewer's reason and note, and how it closes the
    open task."""

    reason: str | None
    internal_note: str | None
    close_task_as: str | None
    supplement: SupplementContent | None


@workflow.defn(name="ReviewWorkflow")
class ReviewWorkflow:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._data: ReviewInput | None = None
        self._status: Status = "screening"
        self._stage_index = 0
        self._due_at: datetime | None = None
        self._overdue = False
        self._supplement_due_at: datetime | None = None
        self._notice_ends_at: datetime | None = None
        self._objections: dict[str, str] = {}
        self._recognition: RecognitionOutcome | None = None
        self._revoked = False
        # Recognitions another title's revocation for fraud revoked (signal ``revoked``): this workflow's own,
        # once it has one, ends its lifecycle like a revocation of its own.
        self._revoked_with: dict[uuid.UUID, TitleRevoked] = {}
        self._generation = 0
        self._published_stage: str | None = None
        # The re-review of the recognition (RE_REVIEW_WINDOW): its window open, the re-review filed (its
        # application and review, a child workflow).
        self._window_open = False
        self._re_review: workflow.ChildWorkflowHandle[Any, ReviewState] | None = None
        # The expert panel sitting on the current stage (EXPERT_PANELS), the seats that have answered, and the
        # generation (entry into the stage) whose panel was drawn - one draw per entry.
        self._panel: PanelDrawn | None = None
        self._answered: set[str] = set()
        self._panel_drawn_at: int | None = None

    # --- state ------------------------------------------------------------------------------------------

    @property
    def data(self) -> ReviewInput:
        assert self._data is not None
        return self._data

    @property
    def stage(self) -> Stage | None:
        if self._status in ("in_review", "returned"):
            return self.data.stages[self._stage_index]
        return None

    def state(self) -> ReviewState:
        return ReviewState(
            application_id=self.data.application_id,
            status=self._status,
            stage=self.stage,
            due_at=self._due_at if self._status == "in_review" else None,
            overdue=self._overdue,
            supplement_due_at=self._supplement_due_at if self._status == "returned" else None,
            notice_ends_at=self._notice_ends_at if self._status == "public_notice" else None,
            open_objections=sorted(k for k, v in self._objections.items() if v == "open"),
            recognition_id=self._recognition.recognition_id if self._recognition else None,
            certificate_no=self._recognition.certificate_no if self._recognition else None,
            valid_until=self._recognition.valid_until if self._recognition else None,
        )

    @workflow.query(name="state")
    def query_state(self) -> ReviewState:
        return self.state()

    def _publish_stage(self) -> None:
        """Keeps the Stage search attribute on the level the review waits at, else on its status, so that an
        operator finds it in the Temporal UI; one upsert per change. Not for workflows that ran before
        STAGE_SEARCH_ATTRIBUTE: their histories have no such commands."""
        stage = self.stage or self._status
        if stage != self._published_stage and workflow.patched(STAGE_SEARCH_ATTRIBUTE):
            workflow.upsert_search_attributes([STAGE.value_set(stage)])
            self._published_stage = stage

    # --- the flow ---------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, data: ReviewInput) -> ReviewState:
        self._data = data
        self._published_stage = workflow.info().typed_search_attributes.get(STAGE)  # what it started with
        if workflow.patched(SCREEN_IN_ONE_STEP):
            await self._screen_and_enter()
        else:
            await self._screen_then_enter()
        while self._status not in TERMINAL:
            if self._status == "in_review":
                await self._wait_in_review()
            elif self._status == "returned":
                await self._wait_for_supplement()
            elif self._status == "public_notice":
                await self._wait_out_notice()
        if self._status == "recognized" and self.data.re_review_of is None:
            await self._recognized_lifecycle()  # a re-review's recognition is its parent's to keep
            notice = self._revoked_with_another()
            if notice is not None:  # its revoker told the benefits too, but may have raced their start
                await self._stop_benefits(
                    f"benefits-{notice.recognition_id}", BenefitsStop(reason=notice.reason, cause="revoked")
                )
        return self.state()

    async def _screen_and_enter(self) -> None:
        """Screening and the first stage's queue in one local activity (one transaction, no task round trips
        through the server): what a batch of thousands of applications costs the stack, halved."""
        async with self._lock:
            if self._status != "screening":
                return  # withdrawn before screening ran
            stage = self.data.stages[0]
            due = workflow.now() + timedelta(seconds=self.data.durations.stage_sla)
            outcome: ScreenOutcome = await workflow.execute_local_activity(
                "screen_and_enter",
                ScreenAndEnterInput(
                    application_id=self.data.application_id,
                    event_key=self._key(),
                    at=workflow.now(),
                    open_task=OpenTask(stage=stage, region_code=self.data.region_code, due_at=due),
                ),
                result_type=ScreenOutcome,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RETRY,
            )
            if outcome.passed:
                self._entered(index=0, due=due)
            else:
                self._status = "ineligible"
                self._publish_stage()
            self._generation += 1

    async def _screen_then_enter(self) -> None:
        """Before SCREEN_IN_ONE_STEP: a screening activity, then a transition activity (kept for the
        workflows started before it; their histories replay through here)."""
        data = self.data
        outcome: ScreenOutcome = await _run(
            "screen_application",
            ScreenInput(application_id=data.application_id),
            result_type=ScreenOutcome,
        )
        async with self._lock:
            if self._status == "screening":
                if outcome.passed:
                    await self._enter_stage(
                        SYSTEM, index=0, action="screened", reason=f"passed {outcome.ruleset}"
                    )
                else:
                    await self._transition(
                        SYSTEM,
                        action="screened",
                        to="ineligible",
                        reason=f"failed {outcome.ruleset}; see the screening result",
                    )

    async def _wait_in_review(self) -> None:
        policy = self.data.panels.get(self.stage) if self.stage is not None else None
        if (
            policy is not None
            and self._panel_drawn_at != self._generation
            and not self._overdue
            and workflow.patched(EXPERT_PANELS)
        ):
            await self._sit_panel(policy)
            return
        generation = self._generation
        timeout = None
        if not self._overdue and self._due_at is not None:
            timeout = max(self._due_at - workflow.now(), timedelta(0))
        try:
            await workflow.wait_condition(lambda: self._generation != generation, timeout=timeout)
        except TimeoutError:
            async with self._lock:
                if self._generation == generation and not self._overdue:
                    stage = self.stage
                    assert stage is not None
                    await self._write(
                        "escalate_task", EscalationInput, stage=stage, escalated_to=self.data.escalation_group
                    )
                    self._overdue = True

    async def _sit_panel(self, policy: PanelPolicy) -> None:
        """The stage decided by an expert panel: drawn (an activity, with a seed made here), then its answers
        awaited until all are in or the stage's SLA ends; the rule's decision then moves the review on as a
        reviewer's would. Too few eligible experts: no panel, the stage's reviewers decide (the reason is
        recorded with the draw). Fewer answers than the quorum at the SLA: the stage escalates."""
        generation = self._generation
        self._panel_drawn_at = generation
        stage, due = self.stage, self._due_at
        assert stage is not None
        assert due is not None
        async with self._lock:
            if self._generation != generation:
                return
            drawn: PanelDrawn = await self._write(
                "draw_panel",
                PanelDraw,
                result_type=PanelDrawn,
                stage=stage,
                seed=str(workflow.uuid4()),
                policy=policy,
                due_at=due,
            )
            if drawn.panel_id is None:
                return
            self._panel, self._answered = drawn, set()
        seats = len(drawn.assignments)
        try:
            await workflow.wait_condition(
                lambda: self._generation != generation or len(self._answered) >= seats,
                timeout=max(due - workflow.now(), timedelta(0)),
            )
        except TimeoutError:
            pass
        async with self._lock:
            self._panel = None
            if self._generation != generation:
                return  # withdrawn while the panel sat
            verdict: PanelVerdict = await self._write(
                "close_panel", PanelClose, result_type=PanelVerdict, panel_id=drawn.panel_id
            )
            if verdict.decision is None:
                await self._write(
                    "escalate_task", EscalationInput, stage=stage, escalated_to=self.data.escalation_group
                )
                self._overdue = True
                return
            await self._apply_decision(
                PANEL, verdict.decision, {"reason": verdict.reason, "close_task_as": verdict.decision}
            )

    async def _wait_for_supplement(self) -> None:
        generation = self._generation
        due = self._supplement_due_at
        assert due is not None
        await self._remind_before(
            due,
            self.data.durations.supplement_reminder,
            done=lambda: self._generation != generation,
            remind=lambda: self._write("remind_supplement", SupplementReminder, supplement_due_at=due),
        )
        try:
            await workflow.wait_condition(
                lambda: self._generation != generation,
                timeout=max(due - workflow.now(), timedelta(0)),
            )
        except TimeoutError:
            async with self._lock:
                if self._generation == generation and self._status == "returned":
                    await self._transition(
                        SYSTEM,
                        action="supplement_deadline_missed",
                        to="withdrawn",
                        reason="no supplement before the deadline",
                        close_task_as="closed",
                    )

    async def _wait_out_notice(self) -> None:
        generation = self._generation
        assert self._notice_ends_at is not None
        remaining = self._notice_ends_at - workflow.now()
        if remaining > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self._generation != generation, timeout=remaining)
            except TimeoutError:
                pass
            return
        await workflow.wait_condition(
            lambda: self._status != "public_notice" or "open" not in self._objections.values()
        )
        async with self._lock:
            if self._status == "public_notice" and "open" not in self._objections.values():
                if workflow.patched(FRAUD_BAR_AT_RECOGNITION) and await self._rejected_if_barred():
                    return
                renews = {"renews": self.data.re_review_of} if self.data.re_review_of else {}
                self._recognition = await self._write(
                    "recognize", RecognizeInput, result_type=RecognitionOutcome, **renews
                )
                self._status = "recognized"
                self._publish_stage()
                self._generation += 1

    async def _rejected_if_barred(self) -> bool:
        """At the notice's end: an enterprise barred after a revocation for fraud, found while this
        application was in review, is rejected rather than recognised (the bar that refuses a filing)."""
        bar: FraudBar = await self._write("fraud_bar", FraudBarCheck, result_type=FraudBar)
        if bar.reason is None:
            return False
        await self._transition(SYSTEM, action="barred_for_fraud", to="rejected", reason=bar.reason)
        return True

    async def _recognized_lifecycle(self) -> None:
        recognition = self._recognition
        assert recognition is not None
        if self._revoked_with_another() is not None:  # revoked with another title before its benefits started
            self._revoked = True
            return
        benefits_id = f"benefits-{recognition.recognition_id}"
        await workflow.start_child_workflow(
            "BenefitsWorkflow",
            BenefitsInput(
                recognition_id=recognition.recognition_id,
                uscc=self.data.uscc,
                tier=self.data.tier,
                program=self.data.program,
                valid_until=recognition.valid_until,
                program_version=self.data.program_version,  # the version that judged it grants its benefits
            ),
            id=benefits_id,
            search_attributes=search_attributes(
                uscc=self.data.uscc, program=self.data.program, tier=self.data.tier
            ),
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )
        window = self.data.durations.re_review_window
        if window is not None and workflow.patched(RE_REVIEW_WINDOW):
            await self._renewals(benefits_id, timedelta(seconds=window))
            return
        await self._remind_before(
            recognition.valid_until,
            self.data.durations.expiry_reminder,
            done=lambda: self._revoked,
            remind=lambda: self._write(
                "remind_expiry", ExpiryReminder, recognition_id=recognition.recognition_id
            ),
        )
        try:
            await workflow.wait_condition(
                lambda: self._revoked, timeout=max(recognition.valid_until - workflow.now(), timedelta(0))
            )
            return  # revoked: the update handler recorded it and told the benefits to stop
        except TimeoutError:
            pass
        async with self._lock:
            if self._revoked:
                return
            await self._change_recognition(recognition, "expired", SYSTEM, "validity ended")
            await self._stop_benefits(
                benefits_id, BenefitsStop(reason="recognition expired", cause="expired")
            )
            rereview: ReReviewOutcome = await _run(
                "open_re_review",
                ReReviewInput(
                    recognition_id=recognition.recognition_id,
                    application_id=self.data.application_id,
                    at=workflow.now(),
                ),
                result_type=ReReviewOutcome,
            )
            if rereview.review is not None:
                review = rereview.review
                await workflow.start_child_workflow(
                    "ReviewWorkflow",
                    review,
                    id=f"review-{rereview.application_id}",
                    search_attributes=search_attributes(
                        uscc=review.uscc, program=review.program, tier=review.tier, stage="screening"
                    ),
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                )

    # --- re-review (复核) -----------------------------------------------------------------------------------

    async def _renewals(self, benefits_id: str, window: timedelta) -> None:
        """The recognition's validity periods: each opens its re-review `window` before expiry (the window's
        activity tells the enterprise, ``recognition.expiring``); a re-review filed in it holds the title
        until decided, and its approval extends the recognition for another period. Ends at revocation, or
        when the recognition lapses: at expiry without a filing, else at the later of expiry and a decision
        other than approval."""
        while True:
            recognition = self._recognition
            assert recognition is not None
            if await self._until(recognition.valid_until - window, lambda: self._revoked):
                return
            async with self._lock:
                if self._revoked:
                    return
                await self._write(
                    "open_re_review_window", ReReviewWindow, recognition_id=recognition.recognition_id
                )
                self._window_open = True
            if not await self._until(recognition.valid_until, self._filed_or_revoked):
                async with self._lock:  # an Update filing it at this moment has the lock: it wins
                    if not self._filed_or_revoked():
                        await self._lapse(recognition, benefits_id, "validity ended; no re-review was filed")
                        return
            if self._revoked:
                return
            assert self._re_review is not None
            try:
                decided: ReviewState | None = await self._re_review
            except ChildWorkflowError as exc:  # terminated or failed: no decision to extend by
                workflow.logger.warning("re-review %s ended without a decision: %s", self._re_review.id, exc)
                decided = None
            self._window_open, self._re_review = False, None
            if self._revoked:
                return
            if decided is not None and decided.status == "recognized" and decided.valid_until is not None:
                self._recognition = recognition.model_copy(update={"valid_until": decided.valid_until})
                await self._extend_benefits(benefits_id, decided.valid_until)
                continue
            # Not renewed: the title ends at the later of its expiry and the decision.
            outcome = decided.status if decided is not None else "ended"
            if workflow.now() < recognition.valid_until:
                await self._extend_benefits(benefits_id, recognition.valid_until)
                if await self._until(recognition.valid_until, lambda: self._revoked):
                    return
            async with self._lock:
                if not self._revoked:
                    await self._lapse(
                        recognition, benefits_id, f"validity ended; the re-review was {outcome}"
                    )
            return

    def _filed_or_revoked(self) -> bool:
        return self._revoked or self._re_review is not None

    async def _until(self, moment: datetime, done: Callable[[], bool]) -> bool:
        """Wait until `moment` (a timer) unless ``done()`` holds first; whether it did."""
        if done() or moment <= workflow.now():
            return done()
        try:
            await workflow.wait_condition(done, timeout=moment - workflow.now())
        except TimeoutError:
            return done()
        return True

    async def _lapse(self, recognition: RecognitionOutcome, benefits_id: str, reason: str) -> None:
        """The recognition expires, and its benefits stop (under the lock)."""
        await self._change_recognition(recognition, "expired", SYSTEM, reason)
        await self._stop_benefits(benefits_id, BenefitsStop(reason="recognition expired", cause="expired"))

    async def _extend_benefits(self, benefits_id: str, until: datetime | None) -> None:
        """Tell the benefits workflow how long the recognition now holds (None: while its re-review is
        undecided); one that has ended needs no telling."""
        try:
            await workflow.get_external_workflow_handle(benefits_id).signal(
                "extend", BenefitsExtension(valid_until=until)
            )
        except ApplicationError as exc:
            workflow.logger.info("benefits %s already closed: %s", benefits_id, exc.message)

    @workflow.update(name="file_re_review")
    async def file_re_review(self, request: ReReviewRequest) -> ReReviewFiled:
        """The enterprise's re-review, with its current figures and evidence: the application written (one
        activity), its review started as a child; the benefits hold while it is undecided."""
        async with self._lock:
            self._check_re_review(request)
            recognition = self._recognition
            assert recognition is not None
            filing: ReReviewOutcome = await self._write(
                "file_re_review",
                ReReviewFiling,
                result_type=ReReviewOutcome,
                recognition_id=recognition.recognition_id,
                re_review_id=workflow.uuid4(),
                actor=request.actor,
                metrics=request.metrics,
                evidence=request.evidence,
            )
            review = filing.review
            assert review is not None
            self._re_review = await workflow.start_child_workflow(
                "ReviewWorkflow",
                review,
                id=f"review-{filing.application_id}",
                result_type=ReviewState,
                search_attributes=search_attributes(
                    uscc=review.uscc, program=review.program, tier=review.tier, stage="screening"
                ),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
            await self._extend_benefits(f"benefits-{recognition.recognition_id}", None)
            return ReReviewFiled(
                application_id=filing.application_id,
                recognition_id=recognition.recognition_id,
                valid_until=recognition.valid_until,
            )

    @file_re_review.validator
    def _check_re_review(self, request: ReReviewRequest) -> None:
        self._check_owner(request.actor, "files the re-review of its recognition")
        if self._status != "recognized" or self._recognition is None or self._revoked:
            raise _conflict("there is no active recognition to re-review")
        if self._re_review is not None:
            raise _conflict("the re-review of this recognition is already filed and under review")
        if not self._window_open:
            window = self.data.durations.re_review_window
            opens = (
                f"; it opens {timedelta(seconds=window).days} days before the recognition expires "
                f"({self._recognition.valid_until.date().isoformat()})"
                if window is not None
                else ""
            )
            raise _conflict(f"the re-review window of this recognition is not open{opens}")

    async def _remind_before(
        self,
        due: datetime,
        lead: float | None,
        *,
        done: Callable[[], bool],
        remind: Callable[[], Awaitable[Any]],
    ) -> None:
        """Wait until ``lead`` seconds before ``due`` (a timer), then ``remind`` (an activity, under the
        lock) - unless ``done()`` holds first. No reminder when there is no lead (a workflow started before
        reminders existed) or the moment has already passed as the window opens; otherwise the commands are
        new since REMINDERS, so histories from before it replay without them."""
        if lead is None:
            return
        remind_at = due - timedelta(seconds=lead)
        if remind_at <= workflow.now() or not workflow.patched(REMINDERS):
            return
        try:
            await workflow.wait_condition(done, timeout=remind_at - workflow.now())
            return  # done first: no reminder
        except TimeoutError:
            pass
        async with self._lock:
            if not done():
                await remind()

    async def _stop_benefits(self, benefits_id: str, stop: BenefitsStop) -> None:
        """Tell the benefits workflow to stop; one that already ended on its own needs no telling."""
        try:
            await workflow.get_external_workflow_handle(benefits_id).signal("stop", stop)
        except ApplicationError as exc:
            workflow.logger.info("benefits %s already closed: %s", benefits_id, exc.message)

    async def _change_recognition(
        self,
        recognition: RecognitionOutcome,
        status: Literal["expired", "revoked"],
        actor: Actor,
        reason: str,
        revoked_for: Literal["fraud", "other"] | None = None,
        *,
        result_type: type[Any] | None = None,
    ) -> Any:
        # The activity's input only (no new command): histories before fraud bars replay unchanged.
        return await self._write(
            "change_recognition",
            RecognitionChange,
            result_type=result_type,
            recognition_id=recognition.recognition_id,
            status=status,
            actor=actor,
            reason=reason,
            revoked_for=revoked_for,
        )

    # --- transitions ------------------------------------------------------------------------------------

    def _key(self) -> str:
        return str(workflow.uuid4())

    async def _write(
        self, activity: str, event: Callable[..., Any], *, result_type: type[Any] | None = None, **fields: Any
    ) -> Any:
        """One write of this application's review: an activity whose input names the application, a fresh
        event key (which makes a retried attempt change nothing twice) and the workflow's time."""
        arg = event(
            application_id=self.data.application_id, event_key=self._key(), at=workflow.now(), **fields
        )
        return await _run(activity, arg, result_type=result_type)

    async def _transition(
        self,
        actor: Actor,
        *,
        action: str,
        to: Status,
        open_task: OpenTask | None = None,
        supplement_due_at: datetime | None = None,
        notice_ends_at: datetime | None = None,
        stage: Stage | None = None,
        **details: Unpack[_Details],
    ) -> None:
        await self._write(
            "apply_transition",
            TransitionInput,
            actor=actor,
            action=action,
            from_status=self._status,
            to_status=to,
            stage=stage if stage is not None else self.stage,
            reason=details.get("reason"),
            internal_note=details.get("internal_note"),
            close_task_as=details.get("close_task_as"),
            open_task=open_task,
            supplement_due_at=supplement_due_at,
            supplement=details.get("supplement"),
            notice_ends_at=notice_ends_at,
        )
        self._status = to
        self._publish_stage()
        self._generation += 1

    async def _enter_stage(
        self,
        actor: Actor,
        *,
        index: int,
        action: str,
        **details: Unpack[_Details],
    ) -> None:
        """Open stage `index` (the same one again after a supplement); state changes only once written."""
        stage = self.data.stages[index]
        due = workflow.now() + timedelta(seconds=self.data.durations.stage_sla)
        await self._transition(
            actor,
            action=action,
            to="in_review",
            stage=stage,
            open_task=OpenTask(stage=stage, region_code=self.data.region_code, due_at=due),
            **details,
        )
        self._entered(index=index, due=due)

    def _entered(self, *, index: int, due: datetime) -> None:
        """The state once stage `index` is open in the database (the status change came with it)."""
        self._status = "in_review"
        self._stage_index = index
        self._due_at = due
        self._overdue = False
        self._publish_stage()

    # --- reviewer decisions -----------------------------------------------------------------------------

    @workflow.update(name="decide")
    async def decide(self, request: DecisionRequest) -> ReviewState:
        async with self._lock:
            self._check_decision(request)
            details: _Details = {
                "reason": request.reason,
                "internal_note": request.internal_note,
                "close_task_as": request.decision,
            }
            await self._apply_decision(request.actor, request.decision, details, request.supplement_due_at)
            return self.state()

    async def _apply_decision(
        self,
        actor: Actor,
        decision: str,
        details: _Details,
        supplement_due_at: datetime | None = None,
    ) -> None:
        """The current stage's decision (a reviewer's or its expert panel's), under the lock."""
        if decision != "approve":
            # rejected, or returned to the enterprise until the supplement deadline
            to: Status = "rejected" if decision == "reject" else "returned"
            due = None
            if to == "returned":
                due = supplement_due_at or workflow.now() + timedelta(
                    seconds=self.data.durations.supplement_deadline
                )
            await self._transition(actor, action=to, to=to, supplement_due_at=due, **details)
            self._supplement_due_at = due or self._supplement_due_at
        elif self._stage_index + 1 < len(self.data.stages):
            await self._enter_stage(actor, index=self._stage_index + 1, action="approved", **details)
        else:
            ends = workflow.now() + timedelta(seconds=self.data.durations.notice_period)
            stage = self.data.stages[self._stage_index]
            await self._transition(
                actor,
                action="approved",
                to="public_notice",
                stage=stage,
                notice_ends_at=ends,
                **details,
            )
            self._notice_ends_at = ends

    @decide.validator
    def _check_decision(self, request: DecisionRequest) -> None:
        actor = request.actor
        if actor.role != "reviewer":
            raise _forbidden("only reviewers decide applications")
        if self._status != "in_review":
            raise _conflict(f"the application is {self._status}, not waiting for a review decision")
        stage = self.stage
        if request.stage is not None and request.stage != stage:
            raise _conflict(f"the {request.stage} stage is not current; the application is at {stage}")
        if self._panel is not None:
            raise _conflict(f"an expert panel decides the {stage} stage; it has not finished")
        if self._overdue and self.data.escalation_group in actor.groups:
            return  # escalated at the SLA breach: the backup group decides, whatever its level and region
        if actor.level != stage:
            stages = self.data.stages
            if actor.level in stages and stages.index(actor.level) < self._stage_index:
                raise _conflict(f"the {actor.level} stage is already decided; the application is at {stage}")
            raise _forbidden(
                f"the application is at the {stage} stage; a {actor.level} reviewer cannot decide"
            )
        if not covers(actor.region, self.data.region_code):
            raise _forbidden("the application is outside the reviewer's region")
        if request.supplement_due_at is not None:
            latest = workflow.now() + timedelta(seconds=self.data.durations.supplement_deadline)
            if request.decision != "return":
                raise _unprocessable("a supplement due date goes with the decision `return` only")
            if not workflow.now() < request.supplement_due_at <= latest:
                raise _unprocessable(
                    "the supplement due date must be in the future and at most the program's supplement "
                    f"deadline from now ({latest.isoformat(timespec='minutes')})"
                )

    # --- expert panels --------------------------------------------------------------------------------------

    @workflow.update(name="score_panel")
    async def score_panel(self, request: ScoreRequest) -> PanelScored:
        """An expert's score or vote on its seat (the API checked the seat is the caller's and the answer fits
        the rule): recorded by an activity; the last answer lets the panel decide."""
        async with self._lock:
            self._check_score(request)
            panel = self._panel
            assert panel is not None
            assert panel.panel_id is not None
            scored: PanelScored = await self._write(
                "record_panel_score",
                PanelScore,
                result_type=PanelScored,
                panel_id=panel.panel_id,
                **fields_of(request, ("assignment_id", "score", "vote")),
            )
            self._answered.add(str(request.assignment_id))
            return scored

    @score_panel.validator
    def _check_score(self, request: ScoreRequest) -> None:
        if request.actor.role != "expert":
            raise _forbidden("only the panel's experts score")
        panel = self._panel
        seat = str(request.assignment_id)
        if panel is None or seat not in panel.assignments:
            raise _conflict("no expert panel of this application is sitting on that seat")
        if panel.assignments[seat] != request.actor.expert_id:
            raise _forbidden("the seat is another expert's")
        if seat in self._answered:
            raise _conflict("this seat has already answered; an expert answers once")

    # --- enterprise actions -----------------------------------------------------------------------------

    def _check_owner(self, actor: Actor, what: str) -> None:
        if actor.role != "enterprise" or actor.uscc != self.data.uscc:
            raise _forbidden(f"only the applicant {what}")

    @workflow.update(name="supplement")
    async def supplement(self, request: SupplementRequest) -> ReviewState:
        """Back to the stage that returned the application. The evidence and corrected figures travel in the
        same transition activity (same commands as a bare note, so histories replay), which cites the
        documents, replaces the figures, screens them again and records what changed, in one transaction.
        A re-screening that fails does not end the review: the stage's reviewer, who asked for the
        information, sees the result and decides (records.apply_transition)."""
        async with self._lock:
            self._check_supplement(request)
            content = None
            if request.evidence or request.metrics is not None:
                content = SupplementContent(evidence=request.evidence, metrics=request.metrics)
            await self._enter_stage(
                request.actor,
                index=self._stage_index,
                action="supplemented",
                reason=request.note,
                supplement=content,
            )
            return self.state()

    @supplement.validator
    def _check_supplement(self, request: SupplementRequest) -> None:
        self._check_owner(request.actor, "supplements an application")
        if self._status != "returned":
            raise _conflict(f"the application is {self._status}; there is no request for information")

    @workflow.update(name="withdraw")
    async def withdraw(self, request: WithdrawRequest) -> ReviewState:
        async with self._lock:
            self._check_withdraw(request)
            await self._transition(
                request.actor,
                action="withdrawn",
                to="withdrawn",
                reason=request.reason or "withdrawn by the applicant",
                close_task_as="closed",
            )
            return self.state()

    @withdraw.validator
    def _check_withdraw(self, request: WithdrawRequest) -> None:
        self._check_owner(request.actor, "withdraws an application")
        if self._status not in OPEN:
            raise _conflict(f"the application is {self._status} and can no longer be withdrawn")

    # --- public notice ----------------------------------------------------------------------------------

    async def _record_objection(
        self,
        actor: Actor,
        objection_id: uuid.UUID,
        reason: str,
        resolution: Literal["open", "upheld", "dismissed"],
    ) -> None:
        await self._write(
            "record_objection",
            ObjectionUpdate,
            objection_id=objection_id,
            actor=actor,
            reason=reason,
            resolution=resolution,
        )
        self._objections[str(objection_id)] = resolution

    @workflow.update(name="object")
    async def object(self, request: ObjectionRequest) -> ReviewState:
        async with self._lock:
            self._check_objection(request)
            await self._record_objection(request.actor, request.objection_id, request.reason, "open")
            self._generation += 1
            return self.state()

    @object.validator
    def _check_objection(self, request: ObjectionRequest) -> None:
        if self._status != "public_notice":
            raise _conflict(f"the application is {self._status}, not on public notice")
        if str(request.objection_id) in self._objections:
            raise _conflict("this objection was already filed")

    @workflow.update(name="resolve_objection")
    async def resolve_objection(self, request: ObjectionResolution) -> ReviewState:
        async with self._lock:
            self._check_resolution(request)
            resolution: Literal["upheld", "dismissed"] = "upheld" if request.upheld else "dismissed"
            await self._record_objection(request.actor, request.objection_id, request.reason, resolution)
            if request.upheld:
                await self._transition(
                    request.actor, action="objection_upheld", to="rejected", reason=request.reason
                )
            else:
                self._generation += 1
            return self.state()

    @resolve_objection.validator
    def _check_resolution(self, request: ObjectionResolution) -> None:
        if request.actor.role != "reviewer":
            raise _forbidden("only reviewers resolve objections")
        if not covers(request.actor.region, self.data.region_code):
            raise _forbidden("the application is outside the reviewer's region")
        if self._objections.get(str(request.objection_id)) != "open":
            raise _conflict("the objection is not open")
        if self._status != "public_notice":
            raise _conflict(f"the application is {self._status}, not on public notice")

    # --- revocation -------------------------------------------------------------------------------------

    @workflow.update(name="revoke")
    async def revoke(self, request: RevokeRequest) -> ReviewState:
        """Revoke the recognition and stop its benefits; for fraud the activity revokes every other title of
        the enterprise in the same transaction, and each one's benefits and review workflow are told here."""
        async with self._lock:
            self._check_revoke(request)
            recognition = self._recognition
            assert recognition is not None
            every_title = request.revoked_for == "fraud" and workflow.patched(FRAUD_REVOKES_EVERY_TITLE)
            changed = await self._change_recognition(
                recognition,
                "revoked",
                request.actor,
                request.reason,
                request.revoked_for,
                result_type=RecognitionChanged if every_title else None,  # before the patch: None
            )
            await self._stop_benefits(
                f"benefits-{recognition.recognition_id}", BenefitsStop(reason=request.reason, cause="revoked")
            )
            also_revoked: list[RevokedTitle] = changed.also_revoked if every_title else []
            for title in also_revoked:
                await self._revoked_too(recognition, title, request.reason)
            self._revoked = True
            return self.state().model_copy(update={"also_revoked": also_revoked})

    async def _revoked_too(self, recognition: RecognitionOutcome, title: RevokedTitle, reason: str) -> None:
        """Another title of the enterprise, revoked for fraud with `recognition` (already recorded): its
        benefits stop, and the review workflow keeping it (if any) ends its lifecycle."""
        reason = revoked_with_reason(recognition.certificate_no, reason)
        await self._stop_benefits(
            f"benefits-{title.recognition_id}", BenefitsStop(reason=reason, cause="revoked")
        )
        if title.application_id is None:
            return
        notice = TitleRevoked(
            recognition_id=title.recognition_id, revoked_with=recognition.recognition_id, reason=reason
        )
        try:
            await workflow.get_external_workflow_handle(f"review-{title.application_id}").signal(
                "revoked", notice
            )
        except ApplicationError as exc:
            workflow.logger.info("review %s already closed: %s", title.application_id, exc.message)

    @workflow.signal(name="revoked")
    def revoked_with(self, notice: TitleRevoked) -> None:
        """Another recognition's revocation for fraud revoked this workflow's (recorded, its benefits told):
        the lifecycle ends as at a revocation of its own. Kept by id, so one that arrives before the
        recognition's own outcome still counts."""
        self._revoked_with[notice.recognition_id] = notice
        if self._revoked_with_another() is not None:
            self._revoked = True

    def _revoked_with_another(self) -> TitleRevoked | None:
        if self._recognition is None:
            return None
        return self._revoked_with.get(self._recognition.recognition_id)

    @revoke.validator
    def _check_revoke(self, request: RevokeRequest) -> None:
        if request.actor.role != "admin":
            raise _forbidden("only an admin revokes a recognition")
        if self._status != "recognized" or self._recognition is None or self._revoked:
            raise _conflict("there is no active recognition to revoke")
