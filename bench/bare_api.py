"""A bare FastAPI JSON endpoint, served by uvicorn with the options `giantflow api` uses: the HTTP ceiling
that ``read_api_ratio`` is measured against. ``python -m bench.bare_api PORT``."""

from __future__ import annotations

import sys

from fastapi import FastAPI

app = FastAPI()


@app.get("/bare")
async def bare() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
