"""A route's write, run once per Idempotency-Key (``services.idempotency.once``): the caller (counted against
the write limit), the request's session and its key, taken by the routes as one dependency (``WriteDep``)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import Depends

from services.deps import SessionDep
from services.idempotency import IdempotencyKey, once
from services.ratelimit import WriterDep


class Write:
    """What one write request brings - the caller, the request's session and Idempotency-Key (``key``) - and
    ``once``: ``services.idempotency.once`` for this caller and key."""

    def __init__(self, user: WriterDep, session: SessionDep, idempotency_key: IdempotencyKey = None) -> None:
        self.user, self.session, self.key = user, session, idempotency_key
        self.once = partial(once, session, user, idempotency_key)


WriteDep = Annotated[Write, Depends()]
