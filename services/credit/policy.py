"""The credit domain's one window on program policy: credit-line limits, approval thresholds and deadlines,
the bridge pool, listing rewards. Programs are data (``programs/*.toml``, loaded once per process as
``Resources.programs``); this is the only module of ``services.credit`` that imports their model, so moving
it is a one-line change here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from services.errors import Conflict, NotFound
from services.programs import Program
from workflows.inputs import BenefitSchedule

__all__ = ["Program", "Programs", "approval_deadline", "approvals_required", "benefit_schedule", "program"]

Programs = Mapping[str, Program]


def program(programs: Programs, key: str) -> Program:
    found = programs.get(key)
    if found is None:
        raise Conflict(f"The program {key!r} is not offered.")
    return found


def benefit_schedule(programs: Programs, *, program_key: str, tier: str) -> BenefitSchedule:
    """What a recognition in ``tier`` of the program is granted."""
    policy = programs.get(program_key)
    if policy is None:
        raise NotFound(f"There is no program {program_key!r}.")
    tier_policy = next((found for key, found in policy.tiers.items() if key == tier), None)
    if tier_policy is None:
        raise NotFound(f"Program {program_key!r} has no tier {tier!r}.")
    pool = policy.bridge_pool
    return BenefitSchedule(
        credit_line_limit=tier_policy.credit_line_limit,
        bridge_loan=pool is not None and tier in pool.qualifying_tiers,
        listing_reward=bool(policy.listing_rewards) and tier in policy.listing_qualifying_tiers,
    )


def approvals_required(policy: Program, amount: Decimal) -> int:
    """Maker-checker: above the program's threshold two distinct finance approvers, else one."""
    return 2 if amount > policy.dual_approval_threshold else 1


def approval_deadline(policy: Program, requested_at: datetime) -> datetime:
    return policy.durations.approval_deadline.add_to(requested_at)
