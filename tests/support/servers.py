"""Real HTTP servers for the tests' own peers (the bank simulator, the test identity provider): uvicorn on
loopback, quiet, no lifespan, HTTP/1.1 only."""

from __future__ import annotations

from typing import Any

import uvicorn


def loopback_server(app: Any, port: int) -> uvicorn.Server:
    """A uvicorn server for ``app`` on 127.0.0.1:``port``, not started, that leaves the process's signals
    alone (the test runner owns them)."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=1,
        )
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server
