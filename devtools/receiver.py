"""A webhook receiver for tests, the bench and the chaos run: an ASGI app that verifies each delivery's
Standard Webhooks signature, records it with the time it arrived, and refuses a chosen share of calls
(500) so that the relay's retries are exercised. Run it with uvicorn (tests.support.servers.loopback_server,
or ``python -m devtools.receiver --port N --secret whsec_... --fail-ratio 0.33 --log FILE``)."""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

Scope = dict[str, Any]


@dataclass
class Received:
    webhook_id: str
    timestamp: str
    signature: str
    body: dict[str, Any]
    at: float  # time.time() when it arrived


@dataclass
class Receiver:
    """``secrets``: the signing secrets to accept (none: signatures are not checked); ``fail_ratio``: the
    share of calls answered 500, drawn from ``seed``; ``log``: a file each accepted delivery is appended to
    as one JSON line (for a receiver in another process)."""

    secrets: list[str] = field(default_factory=list)
    fail_ratio: float = 0.0
    seed: int = 0
    log: Path | None = None
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    bad_signatures: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        headers = {key.decode().lower(): value.decode() for key, value in scope["headers"]}
        status = self.take(raw, headers)
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
        )
        # A 204 carries no body (uvicorn refuses one and drops the connection).
        await send({"type": "http.response.body", "body": b"" if status == 204 else b"no"})

    def take(self, raw: bytes, headers: dict[str, str]) -> int:
        if self.secrets and not any(self._verifies(secret, raw, headers) for secret in self.secrets):
            self.bad_signatures += 1
            return 401
        if self.fail_ratio and self._random.random() < self.fail_ratio:
            self.refused += 1
            return 500
        item = Received(
            webhook_id=headers.get("webhook-id", ""),
            timestamp=headers.get("webhook-timestamp", ""),
            signature=headers.get("webhook-signature", ""),
            body=json.loads(raw),
            at=time.time(),
        )
        self.received.append(item)
        if self.log is not None:
            with self.log.open("a") as out:
                out.write(json.dumps(item.__dict__) + "\n")
        return 204

    @staticmethod
    def _verifies(secret: str, raw: bytes, headers: dict[str, str]) -> bool:
        try:
            Webhook(secret).verify(raw, headers)
        except WebhookVerificationError:
            return False
        return True


def read_log(path: Path) -> list[Received]:
    """What a receiver in another process logged."""
    if not path.exists():
        return []
    return [Received(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:  # pragma: no cover - run as a process by the chaos run
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", action="append", default=[])
    parser.add_argument("--fail-ratio", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    app = Receiver(secrets=args.secret, fail_ratio=args.fail_ratio, seed=args.seed, log=args.log)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":  # pragma: no cover
    main()
