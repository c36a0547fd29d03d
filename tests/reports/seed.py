"""A small cohort of the report-test program (tests/reports/programs/report-test.toml, which no other test
writes applications under) with known outcomes, written straight to the database (in the test's rolled-back
transaction): every figure of the report over it is known in advance, whatever other tests left committed.

batch report-test-2026 (the plan is demo's: specialized_new 20 in 2026 and 30 in 2027; little_giant 5, 10):
  A  specialized_new 500103 machinery    screened in, municipal 1 d, provincial 10 d, notice, recognised
                                          2026-06-01
  B  specialized_new 500103 =HYPERLINK   screened in, municipal 2 d, provincial 20 d, notice, recognised
                                          2026-12-31 17:00 UTC (2027-01-01 in China)
  C  little_giant    330106 electronics  screened in, municipal 3 d, provincial 30 d, national 5 d, notice,
                                          recognised 2027-01-15
  D  specialized_new 500103              ineligible (eligibility and R&D failed)
  E  specialized_new 500230              screened in, municipal 4 d (late: due after 3 d), provincial rejected
                                          after 40 d (late: due after 30 d)
  F  specialized_new 500103              screened in, waiting at municipal, past its due time
  G  a draft; H another program's application; I another batch's - none of them counted.
Money: A's line (2,000,000.00) drew 500,000.00 (paid, 100,000.00 repaid) and asks 200,000.00 (awaiting
approval); C borrowed 1,000,000.00 from the bridge fund (paid); B got a 300,000.00 listing reward (paid).

Imported from ministry lists (``seed_imported``, through services/applications/imported.py, each row twice):
  X  specialized_new 500103 machinery    batch report-test-2026, recognised 2026-07-01, a 2,000,000.00 line
  Y  little_giant    330106 electronics  batch 2024-6 (only imports carry it), recognised 2027-01-01 (its
                                          validity starts 2026-12-31 16:00 UTC: 2027 in China)
  Z  specialized_new 500230 software     batch report-test-2026, recognised 2026-08-01, revoked since
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications.imported import import_row
from services.applications.models import Application, Enterprise, Recognition, ReviewTask, Transition
from services.applications.schemas import RecognitionImportCreate
from services.auth import CurrentUser, Role
from services.credit.models import (
    Benefit,
    BridgeLoan,
    CreditLine,
    Disbursement,
    Drawdown,
    FundPool,
    ListingReward,
)
from tests.support.factories import random_uscc, strong_metrics

PROGRAM, BATCH = "report-test", "report-test-2026"
OTHER_BATCH = "report-test-2027"  # not in the file: I's
MINISTRY_BATCH = "2024-6"  # not in the file either: only Y, imported, carries it
HOSTILE = '=HYPERLINK("http://evil.example/","click")'
T0 = datetime(2026, 4, 10, tzinfo=UTC)
DAY = timedelta(days=1)


def screening(tier: str, *, eligible: bool, rd: bool, direct: bool = False) -> dict[str, Any]:
    def rule(name: str, passed: bool) -> dict[str, Any]:
        return {
            "rule": name,
            "description": name,
            "value": "",
            "threshold": "",
            "points": None,
            "passed": passed,
        }

    return {
        "ruleset": "national-2022",
        "tier": tier,
        "passed": eligible and rd,
        "score": None,
        "direct_path": None,
        "rules": [rule("eligibility", eligible), rule("rd_intensity", rd), rule("direct_award", direct)],
    }


@dataclass
class Cohort:
    apps: dict[str, Application] = field(default_factory=dict)
    recognitions: dict[str, Recognition] = field(default_factory=dict)


class Seeder:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.cohort = Cohort()

    async def application(
        self,
        name: str,
        *,
        tier: str = "specialized_new",
        region: str = "500103",
        industry: str = "machinery",
        status: str,
        stage: str | None = None,
        passed: bool | None = True,
        program: str = PROGRAM,
        batch: str = BATCH,
        direct: bool = False,
    ) -> Application:
        uscc = random_uscc(region)
        self.session.add(
            Enterprise(
                uscc=uscc,
                name=HOSTILE if industry == HOSTILE else f"Enterprise {name}",
                region_code=region,
                industry=industry,
                founded_on=date(2010, 1, 1),
                registered_by="report-test",
            )
        )
        await self.session.flush()
        app = Application(
            id=uuid.uuid4(),
            uscc=uscc,
            program=program,
            tier=tier,
            batch=batch,
            ruleset="national-2022",
            region_code=region,
            status=status,
            stage=stage,
            metrics=strong_metrics(),
            screening=None if passed is None else screening(tier, eligible=passed, rd=passed, direct=direct),
            submitted_by="report-test",
            workflow_started=True,
            created_at=T0,
            updated_at=T0,
        )
        self.session.add(app)
        await self.session.flush()
        self.cohort.apps[name] = app
        return app

    async def task(
        self, app: Application, stage: str, *, days: float | None, decision: str = "approve", sla: float
    ) -> None:
        opened = T0 + DAY * {"municipal": 0, "provincial": 50, "national": 100}[stage]
        self.session.add(
            ReviewTask(
                id=uuid.uuid4(),
                application_id=app.id,
                stage=stage,
                region_code=app.region_code,
                status="open" if days is None else "decided",
                due_at=opened + DAY * sla,
                decision=None if days is None else decision,
                decided_by=None if days is None else f"{stage}-reviewer",
                created_at=opened,
                closed_at=None if days is None else opened + DAY * days,
            )
        )
        await self.session.flush()

    async def transition(self, app: Application, to_status: str) -> None:
        self.session.add(
            Transition(
                application_id=app.id,
                event_key=f"report-test-{uuid.uuid4()}",
                actor="system",
                role="system",
                action="notice",
                from_status="in_review",
                to_status=to_status,
                at=T0 + 120 * DAY,
            )
        )

    async def recognise(self, name: str, valid_from: datetime) -> Recognition:
        app = self.cohort.apps[name]
        recognition = Recognition(
            id=uuid.uuid4(),
            application_id=app.id,
            uscc=app.uscc,
            program=app.program,
            tier=app.tier,
            certificate_no=f"REPORT-TEST-{uuid.uuid4().hex[:12]}",
            valid_from=valid_from,
            valid_until=valid_from + 3 * 365 * DAY,
            status="active",
        )
        self.session.add(recognition)
        await self.session.flush()
        self.cohort.recognitions[name] = recognition
        return recognition


def _payout(amount: str, status: str) -> dict[str, Any]:
    return {
        "amount": Decimal(amount),
        "status": status,
        "requested_by": "report-test",
        "required_approvals": 1,
        "approval_deadline": T0 + 400 * DAY,
        "workflow_started": True,
    }


async def seed_cohort(session: AsyncSession) -> Cohort:
    s = Seeder(session)
    a = await s.application("A", status="recognized", direct=True)
    b = await s.application("B", status="recognized", industry=HOSTILE)
    c = await s.application(
        "C", tier="little_giant", region="330106", industry="electronics", status="recognized"
    )
    await s.application("D", status="ineligible", passed=False)
    e = await s.application("E", region="500230", status="rejected")
    f = await s.application("F", status="in_review", stage="municipal")
    await s.application("G", status="draft", passed=None)
    await s.application("H", status="in_review", stage="municipal", program="national", batch="2026")
    await s.application("I", status="ineligible", passed=False, batch=OTHER_BATCH)
    for app, days in ((a, 1), (b, 2), (c, 3), (e, 4)):
        await s.task(app, "municipal", days=days, sla=3)
    await s.task(f, "municipal", days=None, sla=3)  # due 2026-04-13: long past
    for app, days in ((a, 10), (b, 20), (c, 30)):
        await s.task(app, "provincial", days=days, sla=30)
    await s.task(e, "provincial", days=40, decision="reject", sla=30)
    await s.task(c, "national", days=5, sla=30)
    for app in (a, b, c):
        await s.transition(app, "public_notice")
    ra = await s.recognise("A", datetime(2026, 6, 1, tzinfo=UTC))
    rb = await s.recognise("B", datetime(2026, 12, 31, 17, tzinfo=UTC))
    rc = await s.recognise("C", datetime(2027, 1, 15, tzinfo=UTC))

    def benefit(r: Recognition, kind: str, amount: str | None) -> Benefit:
        return Benefit(
            id=uuid.uuid4(),
            recognition_id=r.id,
            uscc=r.uscc,
            program=PROGRAM,
            tier=r.tier,
            kind=kind,
            status="active",
            amount=Decimal(amount) if amount else None,
        )

    session.add_all(
        [
            benefit(ra, "credit_line", "2000000.00"),
            benefit(rb, "credit_line", "2000000.00"),
            benefit(rc, "credit_line", "3000000.00"),
            benefit(rc, "bridge_loan", None),
        ]
    )
    line = CreditLine(
        id=uuid.uuid4(),
        recognition_id=ra.id,
        uscc=ra.uscc,
        program=PROGRAM,
        tier=ra.tier,
        credit_limit=Decimal("2000000.00"),
        reserved=Decimal("200000.00"),
        drawn=Decimal("500000.00"),
        repaid=Decimal("100000.00"),
        status="active",
    )
    session.add(line)
    await session.flush()
    paid = Drawdown(
        id=uuid.uuid4(),
        credit_line_id=line.id,
        uscc=ra.uscc,
        program=PROGRAM,
        tier=ra.tier,
        repaid=Decimal("100000.00"),
        **_payout("500000.00", "disbursed"),
    )
    waiting = Drawdown(
        id=uuid.uuid4(),
        credit_line_id=line.id,
        uscc=ra.uscc,
        program=PROGRAM,
        tier=ra.tier,
        **_payout("200000.00", "pending_approval"),
    )
    await session.execute(
        insert(FundPool)
        .values(program=PROGRAM, capacity=Decimal("100000000.00"), committed=Decimal("0.00"))
        .on_conflict_do_nothing()
    )
    bridge = BridgeLoan(
        id=uuid.uuid4(),
        program=PROGRAM,
        uscc=rc.uscc,
        tier=rc.tier,
        recognition_id=rc.id,
        term_days=15,
        purpose="repay a maturing loan",
        **_payout("1000000.00", "disbursed"),
    )
    reward = ListingReward(
        id=uuid.uuid4(),
        uscc=rb.uscc,
        board="growth",
        program=PROGRAM,
        tier=rb.tier,
        recognition_id=rb.id,
        listed_on=date(2026, 9, 1),
        security_code="RT0001",
        **_payout("300000.00", "disbursed"),
    )
    session.add_all([paid, waiting, bridge, reward])
    await session.flush()

    def disbursement(kind: str, payout: Any, uscc: str, tier: str) -> Disbursement:
        return Disbursement(
            id=uuid.uuid4(),
            kind=kind,
            **{f"{kind}_id": payout.id},
            uscc=uscc,
            program=PROGRAM,
            tier=tier,
            amount=payout.amount,
            status="paid",
            bank_key=f"report-test-{uuid.uuid4()}",
            bank_reference="BANK-1",
        )

    session.add_all(
        [
            disbursement("drawdown", paid, ra.uscc, ra.tier),
            disbursement("bridge_loan", bridge, rc.uscc, rc.tier),
            disbursement("listing_reward", reward, rb.uscc, rb.tier),
        ]
    )
    await session.flush()
    return s.cohort


async def seed_imported(session: AsyncSession, programs: Any) -> dict[str, Recognition]:
    """X, Y and Z as an admin imports them - every row twice, as a list imported again is: the second time
    finds what the first made - and X's credit line (the benefits workflow is not running here)."""
    admin = CurrentUser(sub="report-test-admin", role=Role.admin)
    rows = {
        "X": ("specialized_new", "500103", "machinery", BATCH, date(2026, 7, 1)),
        "Y": ("little_giant", "330106", "electronics", MINISTRY_BATCH, date(2027, 1, 1)),
        "Z": ("specialized_new", "500230", "software", BATCH, date(2026, 8, 1)),
    }
    imported: dict[str, Recognition] = {}
    for name, (tier, region, industry, batch, recognized_on) in rows.items():
        row = RecognitionImportCreate(
            program=PROGRAM,
            tier=tier,
            uscc=random_uscc(region),
            name=f"Listed {name}",
            region_code=region,
            industry=industry,
            founded_on=date(2012, 3, 1),
            batch=batch,
            list_reference=f"工信部{batch}批-{uuid.uuid4().hex[:6]}",
            recognized_on=recognized_on,
        )
        first = await import_row(session, user=admin, row=row, programs=programs)
        again = await import_row(session, user=admin, row=row, programs=programs)
        assert (first.created, again.created) == (True, False)
        assert again.recognition.id == first.recognition.id
        imported[name] = first.recognition
    imported["Z"].status = "revoked"
    x = imported["X"]
    session.add(
        Benefit(
            id=uuid.uuid4(),
            recognition_id=x.id,
            uscc=x.uscc,
            program=PROGRAM,
            tier=x.tier,
            kind="credit_line",
            status="active",
            amount=Decimal("2000000.00"),
        )
    )
    await session.flush()
    return imported
