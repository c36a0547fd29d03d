"""HTTP routes of what recognitions show outside the service: an enterprise's certificate (a PDF whose QR
code points at the public verification URL), and the two public routes - verification by certificate number
and the list of applications on public notice - which take no token, are limited per client address
(services/ratelimit.py) and may be cached by anyone for a minute. Parse, call a service, return."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from services.applications import service
from services.applications.schemas import NO_NUL, USCC_PATTERN, PublicNoticeRead, PublicRecognitionRead
from services.config import Settings
from services.deps import CurrentUserDep, ResourcesDep, SessionDep, StrictQueryRoute
from services.errors import PROBLEM_JSON, READ_ONE_ERRORS, problem_responses
from services.files import content_disposition, etag_of
from services.pagination import CursorQuery, LimitQuery, Page
from services.ratelimit import limit_public
from services.vocabulary import Tier

router = APIRouter(route_class=StrictQueryRoute)

# Public data, the same for every caller: any cache may keep it for a minute (a revocation shows within it).
PUBLIC_CACHE = "public, max-age=60"
# A certificate is its enterprise's: kept by the client only, revalidated each time (ETag), since a
# revocation withdraws it.
CERTIFICATE_CACHE = "private, no-cache"
VERIFY_ROUTE = "verify_recognition"
OBJECTION_ROUTE = "file_objection"  # services/applications/router.py


def _verify_url(request: Request, settings: Settings) -> Callable[[str], str]:
    """certificate number -> its public verification URL, under GIANTFLOW_PUBLIC_BASE_URL."""

    def url(certificate_no: str) -> str:
        path = request.app.url_path_for(VERIFY_ROUTE, certificate_no=quote(certificate_no, safe=""))
        return f"{settings.public_url}{path}"

    return url


def _objection_path(request: Request) -> Callable[[uuid.UUID], str]:
    """application id -> the path its objections are filed at."""

    def path(application_id: uuid.UUID) -> str:
        return str(request.app.url_path_for(OBJECTION_ROUTE, application_id=str(application_id)))

    return path


def _matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match names the entity tag (weak comparison, RFC 9110 section 13.1.2), or is ``*``."""
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


_RETRY_AFTER = {"description": "seconds until the client address may ask again", "schema": {"type": "string"}}
_RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {**problem_responses(429)[429], "headers": {"Retry-After": _RETRY_AFTER}}
}
_PUBLIC_OK_HEADERS = {"Cache-Control": {"description": PUBLIC_CACHE, "schema": {"type": "string"}}}


@router.get(
    "/recognitions/{recognition_id}/certificate",
    response_class=Response,
    tags=["recognitions"],
    responses={
        200: {
            "description": "The certificate (zh-CN and English), its QR code to the public verification URL",
            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
            "headers": {
                "ETag": {"description": "the PDF's SHA-256 in quotes", "schema": {"type": "string"}},
                "Content-Disposition": {
                    "description": "attachment; filename={certificate_no}.pdf",
                    "schema": {"type": "string"},
                },
            },
        },
        304: {"description": "Not modified: `If-None-Match` names the certificate's ETag"},
        409: {
            "description": "The recognition is revoked: its certificate is no longer issued",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
        **READ_ONE_ERRORS,
    },
)
async def recognition_certificate(
    request: Request,
    recognition_id: uuid.UUID,
    user: CurrentUserDep,
    session: SessionDep,
    resources: ResourcesDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=2000)] = None,
) -> Response:
    """The recognition's certificate as a PDF (its enterprise, admins). The same recognition always renders
    to the same bytes, so its `ETag` answers `If-None-Match` with a 304. A revoked recognition's certificate
    is a 409 problem; an expired one's is still served (its dates say when it held)."""
    certificate = await service.certificate(
        session,
        user=user,
        recognition_id=recognition_id,
        programs=resources.programs,
        verify_url=_verify_url(request, resources.settings),
    )
    etag = etag_of(certificate.sha256)
    headers = {"ETag": etag, "Cache-Control": CERTIFICATE_CACHE}
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    headers["Content-Disposition"] = content_disposition(certificate.filename)
    return Response(certificate.pdf, media_type="application/pdf", headers=headers)


@router.get(
    "/public/recognitions/{certificate_no}",
    name=VERIFY_ROUTE,
    response_model=PublicRecognitionRead,
    tags=["public"],
    dependencies=[Depends(limit_public)],
    responses={200: {"headers": _PUBLIC_OK_HEADERS}, **problem_responses(404, 422), **_RATE_LIMITED},
)
async def verify_recognition(
    certificate_no: Annotated[str, Path(min_length=1, max_length=80, pattern=NO_NUL)],
    response: Response,
    session: SessionDep,
) -> PublicRecognitionRead:
    """Verify a certificate (no token): the enterprise's name, the tier, the validity and its status now -
    `valid`, `expired` or `revoked`. 404 for a number no recognition holds."""
    body = await service.verify_certificate(session, certificate_no=certificate_no, now=datetime.now(UTC))
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return body


@router.get(
    "/public/notices",
    response_model=Page[PublicNoticeRead],
    tags=["public"],
    dependencies=[Depends(limit_public)],
    responses={200: {"headers": _PUBLIC_OK_HEADERS}, **problem_responses(422), **_RATE_LIMITED},
)
async def public_notices(
    request: Request,
    response: Response,
    session: SessionDep,
    resources: ResourcesDep,
    tier: Tier | None = None,
    uscc: Annotated[str | None, Query(pattern=USCC_PATTERN)] = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[PublicNoticeRead]:
    """What is on public notice (公示) now, the notice ending soonest first (no token): each enterprise's
    name and USCC, the tier, when the notice ends and how to object. Filter by `tier`, `uscc`."""
    page = await service.public_notices(
        session,
        tier=tier,
        uscc=uscc,
        cursor=cursor,
        limit=limit,
        programs=resources.programs,
        objection_path=_objection_path(request),
    )
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return page
