"""HTTP route of imported recognitions: ``POST /recognitions/imports`` takes one row as JSON or a CSV list as
multipart ``file`` (admin). Parses, calls the service, returns; once the import commits, the recognitions'
benefits workflows are started (services/applications/imported.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from services.applications import imported
from services.applications.schemas import RecognitionImportCreate, RecognitionImportRead
from services.deps import ResourcesDep, SessionDep, StrictQueryRoute
from services.errors import (
    FieldError,
    Unprocessable,
    UnsupportedMediaType,
    problem_responses,
    validation_errors,
)
from services.idempotency import IdempotencyKey, once
from services.ratelimit import WriterDep

router = APIRouter(tags=["recognitions"], route_class=StrictQueryRoute)

CSV_COLUMNS = (
    "CSV, UTF-8 or GBK: uscc, name, region, industry, founded_on, program, tier, batch, list_reference, "
    "recognized_on, valid_until (English or Chinese headers)"
)
BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": RecognitionImportCreate.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": CSV_COLUMNS,
                        }
                    },
                }
            },
        },
    }
}


@router.post(
    "/recognitions/imports",
    response_model=RecognitionImportRead,
    responses=problem_responses(401, 403, 409, 415, 422, 429, 503),
    openapi_extra=BODY_SCHEMA,
)
async def import_recognitions(
    request: Request,
    user: WriterDep,
    session: SessionDep,
    resources: ResourcesDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Enter recognitions from a ministry's published list (admin): one row as JSON (a refusal is a 422), or
    a CSV as multipart ``file`` (each refused row in ``errors`` with its line, field and reason). Importing a
    row again changes nothing; each recognition gets its program's benefits once."""
    imported.authorize(user)
    programs = resources.programs
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            row = RecognitionImportCreate.model_validate_json(await request.body())
        except ValidationError as error:
            raise Unprocessable(
                "The body is not a valid recognition row.", errors=validation_errors(error.errors())
            ) from None
        payload: Any = row

        async def act() -> RecognitionImportRead:
            return await imported.import_one(session, user=user, row=row, programs=programs)

    elif kind == "multipart/form-data":
        async with request.form() as form:  # closed here: its spooled file with it
            file = form.get("file")
            content = await file.read() if isinstance(file, UploadFile) else None
        if content is None:
            raise Unprocessable(
                "Send the list as the multipart field `file`.",
                errors=[FieldError(field="file", message="required")],
            )
        payload = {"file": content.hex()}

        async def act() -> RecognitionImportRead:
            return await imported.import_file(session, user=user, content=content, programs=programs)

    else:
        raise UnsupportedMediaType("Send one row as application/json or a CSV list as multipart/form-data.")

    async def start(result: RecognitionImportRead) -> None:
        await session.commit()
        await imported.start_benefits(
            resources.temporal,
            imported=result,
            programs=programs,
            task_queue=resources.settings.temporal_task_queue,
        )

    return await once(
        session,
        user,
        idempotency_key,
        endpoint="POST /recognitions/imports",
        payload=payload,
        act=act,
        then=start,
    )
