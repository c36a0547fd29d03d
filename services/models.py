"""Every ORM model, imported so that `metadata` is complete (Alembic and tests use it)."""

from services import events, idempotency_models, ratelimit_models
from services.applications import models as applications_models
from services.applications import panel_models
from services.catalog import models as catalog_models
from services.credit import models as credit_models
from services.credit import reconciliation_models
from services.db import Base
from services.notifications import models as notifications_models
from services.pools import models as pools_models
from services.reports import models as reports_models

metadata = Base.metadata

__all__ = [
    "applications_models",
    "catalog_models",
    "credit_models",
    "events",
    "idempotency_models",
    "metadata",
    "notifications_models",
    "panel_models",
    "pools_models",
    "ratelimit_models",
    "reconciliation_models",
    "reports_models",
]
