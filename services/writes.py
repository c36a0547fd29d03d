"""A route's write, run once per Idempotency-Key (``services.idempotency.once``): what every write route takes
besides its path and body, as one dependency (``WriteDep``) - the caller (counted against the write limit),
the request's session, the process's resources and the request's key. A domain whose writes need more (credit:
Temporal, to start a payout's workflow) adds it in a subclass."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import Depends

from services.deps import ResourcesDep, SessionDep
from services.idempotency import IdempotencyKey, once
from services.ratelimit import WriterDep


class Write:
    """What one write request brings - the caller, the request's session, the resources and the
    Idempotency-Key (``key``) - and ``once``: ``services.idempotency.once`` for this caller and key."""

    def __init__(
        self,
        user: WriterDep,
        session: SessionDep,
        resources: ResourcesDep,
        idempotency_key: IdempotencyKey = None,
    ) -> None:
        self.user, self.session, self.resources, self.key = user, session, resources, idempotency_key
        self.once = partial(once, session, user, idempotency_key)


WriteDep = Annotated[Write, Depends()]
