"""Every ORM model, imported so that `metadata` is complete (Alembic and tests use it)."""

from services.applications import models as applications_models
from services.db import Base
from services import idempotency_models

metadata = Base.metadata

__all__ = ["applications_models", "idempotency_models", "metadata"]
