"""Walk one enterprise through the demo program over the real HTTP API, one printed line per step.

With `make run` going, in another shell:

    .venv/bin/python examples/walkthrough.py                  # against http://127.0.0.1:8000
    .venv/bin/python examples/walkthrough.py --api http://127.0.0.1:8001 --amount 1500000.00

It picks a fresh, valid Unified Social Credit Code, registers the enterprise, uploads a small generated PDF
for every document the tier requires, submits an application with figures that pass screening, approves it
at every review level the tier has (municipal, then provincial), waits out the public notice (20 s in the
demo program) until the application is recognised, then draws on the credit line that recognition opened:
the drawdown is requested with an Idempotency-Key, approved by finance (by two officers above the program's
`dual_approval_threshold`), paid by the bank simulator, and its ledger lines are printed.

Tokens are development HS256 tokens signed with the configured secret, minted the way `giantflow token` does
(`services.auth.issue_development_token` with `services.config.get_settings()`), so run it with the same
GIANTFLOW_* environment as the stack. Any unexpected HTTP status prints the RFC 9457 problem document and
exits with status 1; a wait that times out also exits 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn

import httpx
from pydantic import ValidationError

from devtools.seeding import random_uscc, strong_metrics
from services.auth import Role, issue_development_token
from services.config import get_settings

PROGRAM = "demo"
TIER = "specialized_new"
API_PREFIX = "/api/v1"
POLL_SECONDS = 0.5


def say(line: str) -> None:
    print(line, flush=True)


def fail(line: str) -> NoReturn:
    print(f"walkthrough: {line}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def minimal_pdf(title: str) -> bytes:
    """A small but well-formed one-page PDF (header, four objects, cross-reference table, trailer)."""
    text = title.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 14 Tf 72 770 Td ({text}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def seconds(duration: str) -> float:
    """An ISO 8601 duration as `GET /programs` shows it (`PT20S`, `P5D`, `P3Y`) in seconds (a year is 365
    days, a month 30: only used to size a wait)."""
    match = re.fullmatch(
        r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?",
        duration.strip(),
    )
    if match is None:
        fail(f"cannot read the duration {duration!r}")
    years, months, weeks, days, hours, minutes, secs = (float(g or 0) for g in match.groups())
    return timedelta(
        days=365 * years + 30 * months + 7 * weeks + days, hours=hours, minutes=minutes, seconds=secs
    ).total_seconds()


class Api:
    """The HTTP calls, each checked against the statuses the step expects."""

    def __init__(self, base: str, timeout: float) -> None:
        self.base = base.rstrip("/").removesuffix(API_PREFIX)
        self.timeout = timeout
        self.http = httpx.Client(base_url=self.base, timeout=30.0)

    def call(
        self,
        method: str,
        path: str,
        token: str | None,
        *expected: int,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        url = path if path in ("/healthz", "/readyz") else API_PREFIX + path
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        try:
            response = self.http.request(method, url, headers=sent, **kwargs)
        except httpx.HTTPError as exc:
            fail(f"{method} {self.base}{url}: {exc or type(exc).__name__} - is `make run` going?")
        if response.status_code not in (expected or (200,)):
            print(
                f"walkthrough: {method} {url} answered {response.status_code}, expected "
                f"{' or '.join(map(str, expected or (200,)))}:",
                file=sys.stderr,
            )
            try:
                problem = json.dumps(response.json(), indent=2, ensure_ascii=False)
            except ValueError:
                problem = response.text
            print(problem, file=sys.stderr, flush=True)
            raise SystemExit(1)
        return response

    def json(self, method: str, path: str, token: str | None, *expected: int, **kwargs: Any) -> Any:
        return self.call(method, path, token, *expected, **kwargs).json()

    def wait(self, what: str, probe: Callable[[], Any], timeout: float | None = None) -> Any:
        """Call `probe` until it returns something truthy; fail naming `what` after the timeout."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not (found := probe()):
            if time.monotonic() > deadline:
                fail(f"timed out after {timeout or self.timeout:.0f} s waiting for {what}")
            time.sleep(POLL_SECONDS)
        return found


def reviewer_region(level: str, region: str) -> str:
    """The narrowest reviewer scope at a level that covers the enterprise's region code."""
    return {"municipal": region[:4] + "00", "provincial": region[:2] + "0000"}.get(level, "000000")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the API's base URL")
    parser.add_argument("--region", default="500103", help="the enterprise's 6-digit region code")
    parser.add_argument("--amount", default="500000.00", help="the drawdown, in yuan with two decimals")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each step")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d{6}", args.region):
        parser.error(f"--region must be a 6-digit administrative division code, got {args.region!r}")

    try:
        settings = get_settings()
    except ValidationError as exc:
        fail(f"invalid GIANTFLOW_* settings: {exc.errors()[0]['msg']}")

    def mint(role: Role, sub: str, **claims: str) -> str:
        return issue_development_token(settings, role=role, sub=sub, ttl=timedelta(hours=1), **claims)

    api = Api(args.api, args.timeout)
    api.call("GET", "/readyz", None, 200)
    say(f"API at {api.base} is ready")

    # 1. What the tier asks for: its review levels, the evidence documents and the public notice.
    programs = api.json("GET", "/programs", None, 200)
    program = next((p for p in programs if p["key"] == PROGRAM), None)
    if program is None:
        fail(f"the API offers no program {PROGRAM!r} (it has {', '.join(p['key'] for p in programs)})")
    tier = next(t for t in program["tiers"] if t["key"] == TIER)
    notice = seconds(program["notice_period"])
    say(
        f"program {PROGRAM}, tier {TIER}: review by {', '.join(tier['review_levels'])}; evidence "
        f"{', '.join(tier['required_documents'])}; public notice {notice:g} s"
    )

    # 2. The enterprise registers itself.
    uscc = random_uscc(args.region)
    owner = mint(Role.enterprise, f"enterprise-{uscc}", uscc=uscc)
    enterprise = api.json(
        "POST",
        "/enterprises",
        owner,
        201,
        json={
            "uscc": uscc,
            "name": f"Walkthrough Co {uscc[8:12]}",
            "region_code": args.region,
            "industry": "machinery",
            "founded_on": "2012-03-01",
            "contact_email": f"finance-{uscc[8:12].lower()}@walkthrough.example",
        },
    )
    say(f"registered enterprise {enterprise['uscc']} ({enterprise['name']}, region {args.region})")

    # 3. It uploads one PDF per required document kind.
    evidence = []
    for kind in tier["required_documents"]:
        pdf = minimal_pdf(f"{kind} of {uscc}")
        document = api.json(
            "POST",
            "/documents",
            owner,
            201,
            data={"kind": kind},
            files={"file": (f"{kind}.pdf", pdf, "application/pdf")},
        )
        evidence.append(document["id"])
        say(f"uploaded {kind}.pdf ({document['size']} bytes) as document {document['id']}")

    # 4. It applies; screening starts at once.
    application = api.json(
        "POST",
        "/applications",
        owner,
        201,
        json={
            "uscc": uscc,
            "program": PROGRAM,
            "tier": TIER,
            "metrics": strong_metrics(),
            "evidence": evidence,
        },
    )
    app_id = application["id"]
    say(f"submitted application {app_id} (status {application['status']}, batch {application['batch']})")

    def read_application() -> dict[str, Any]:
        body: dict[str, Any] = api.json("GET", f"/applications/{app_id}", owner, 200)
        return body

    # 5. Screening checks the declared figures against every rule of the ruleset.
    screened = api.wait("screening", lambda: (body := read_application())["status"] != "screening" and body)
    screening = screened["screening"] or {}
    if not screening.get("passed"):
        failed = [r for r in screening.get("rules", []) if not r["passed"]]
        for rule in failed:
            say(f"  rule {rule['rule']}: {rule['value']} (needs {rule['threshold']})")
        fail(f"application {app_id} did not pass screening: status {screened['status']}")
    score = f", score {screening['score']}" if screening.get("score") is not None else ""
    say(
        f"screening passed ({screening['ruleset']}{score}, {len(screening['rules'])} rules checked): "
        f"application {app_id} is {screened['status']} at {screened['stage']}"
    )

    # 6. Each review level in turn: the reviewer finds the task in its queue and approves it.
    for level in tier["review_levels"]:
        region = reviewer_region(level, args.region)
        reviewer = mint(Role.reviewer, f"reviewer-{level}-{region}", level=level, region=region)

        def find_task(reviewer: str = reviewer) -> dict[str, Any] | None:
            cursor = None
            while True:
                page = api.json(
                    "GET",
                    "/review-tasks",
                    reviewer,
                    200,
                    params={"limit": 100, **({"cursor": cursor} if cursor else {})},
                )
                task = next((t for t in page["items"] if t["application_id"] == app_id), None)
                if task is not None or not page.get("next_cursor"):
                    return task
                cursor = page["next_cursor"]

        task = api.wait(f"the {level} review task", find_task)
        say(f"{level} reviewer (region {region}) found the task for {app_id}, due {task['due_at']}")
        state = api.json(
            "POST",
            f"/applications/{app_id}/decisions",
            reviewer,
            200,
            json={"decision": "approve", "reason": f"{level} review: evidence and figures complete"},
        )
        stage = f" at {state['stage']}" if state.get("stage") else ""
        say(f"{level} reviewer approved {app_id}: now {state['status']}{stage}")

    # 7. The public notice runs out and the application is recognised.
    started = time.monotonic()
    recognised = api.wait(
        "the public notice to end",
        lambda: (body := read_application())["status"] in ("recognized", "rejected") and body,
        timeout=notice + args.timeout,
    )
    if recognised["status"] != "recognized":
        fail(f"application {app_id} ended {recognised['status']} instead of recognized")
    recognitions = api.json("GET", "/recognitions", owner, 200, params={"uscc": uscc})
    certificate = next(
        (r for r in recognitions["items"] if r["application_id"] == app_id), {"certificate_no": "?"}
    )
    say(
        f"application {app_id} is recognized after {time.monotonic() - started:.0f} s more: "
        f"certificate {certificate['certificate_no']}, valid until {certificate.get('valid_until', '?')}"
    )

    # 8. Recognition opens the tier's credit line.
    line = api.wait("the credit line", lambda: api.json("GET", "/credit-lines", owner, 200)["items"] or None)[
        0
    ]
    say(f"credit line {line['id']}: limit {line['limit']}, available {line['available']}")

    # 9. The enterprise draws on it; a retry with the same Idempotency-Key answers the same drawdown.
    key = f"walkthrough-{uuid.uuid4()}"
    request: dict[str, Any] = {"json": {"amount": args.amount}, "headers": {"Idempotency-Key": key}}
    drawdown = api.json("POST", f"/credit-lines/{line['id']}/drawdowns", owner, 201, **request)
    drawdown_id = drawdown["id"]
    say(
        f"requested drawdown {drawdown_id} of {drawdown['amount']} (Idempotency-Key {key}): "
        f"{drawdown['status']}, {drawdown['required_approvals']} finance approval(s) needed"
    )
    retry = api.call("POST", f"/credit-lines/{line['id']}/drawdowns", owner, 201, **request)
    if retry.json()["id"] != drawdown_id:
        fail(f"the retry with the same Idempotency-Key created another drawdown {retry.json()['id']}")
    say(
        f"retried with the same key: the same drawdown {drawdown_id} "
        f"(Idempotent-Replayed: {retry.headers.get('Idempotent-Replayed', 'absent')})"
    )

    # 10. Finance approves: one officer, or two distinct ones above the program's threshold.
    for officer in [f"finance-{n}" for n in range(1, int(drawdown["required_approvals"]) + 1)]:
        decided = api.json(
            "POST",
            f"/drawdowns/{drawdown_id}/approvals",
            mint(Role.finance, officer),
            200,
            json={"decision": "approve", "reason": "checked against the credit line"},
        )
        say(f"{officer} approved drawdown {drawdown_id}: now {decided['status']}")

    # 11. The worker pays it through the bank simulator and posts it to the ledger.
    def paid() -> dict[str, Any] | None:
        body: dict[str, Any] = api.json("GET", f"/drawdowns/{drawdown_id}", owner, 200)
        if body["status"] in ("rejected", "expired", "failed"):
            fail(f"drawdown {drawdown_id} ended {body['status']}: {body.get('reason')}")
        return body if body["status"] == "disbursed" and body["ledger_entries"] else None

    disbursed = api.wait("the disbursement", paid)
    payment = disbursed["disbursement"] or {}
    say(
        f"drawdown {drawdown_id} is disbursed: {payment.get('amount')} paid, "
        f"bank reference {payment.get('bank_reference')}"
    )
    for entry in disbursed["ledger_entries"]:
        say(f"ledger entry {entry['id']} ({entry['memo']}):")
        for posting in entry["lines"]:
            say(f"  {posting['account']:<40} debit {posting['debit']:>14}  credit {posting['credit']:>14}")
    line = api.json("GET", f"/credit-lines/{line['id']}", owner, 200)
    say(f"credit line {line['id']}: drawn {line['drawn']}, available {line['available']}")
    say("walkthrough complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
