"""Placeholder: the partner-bank simulator lands with the credit issue."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI


def create_bank_app(data_dir: Path) -> FastAPI:
    app = FastAPI(title="giantflow bank simulator")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
