"""An operator finds an application's review workflow in Temporal by the enterprise's USCC (search attributes
``Uscc``, ``Program``, ``Tier``, set at start), and sees its ``Stage`` follow the review (upserted by the
workflow) - on the dev server, registered as `giantflow temporal-setup` registers them."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecution
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from services.config import Settings
from services.contracts import PROGRAM, STAGE, TIER, USCC
from services.resources import Resources
from tests.applications.conftest import Applicant, poll, reviewer_headers
from tests.conftest import BIN_DIR
from workflows.worker import workflow_classes


async def find(client: Client, query: str, timeout: float = 15.0) -> list[WorkflowExecution]:
    """The workflows ``query`` finds, once it finds any (visibility lags the workflow a little)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [execution async for execution in client.list_workflows(query)]
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_a_review_is_found_by_uscc_and_its_stage_follows_the_review(
    applicant: Applicant, settings: Settings, resources: Resources
) -> None:
    api, client = applicant.api, resources.temporal
    await applicant.register()
    created = await applicant.submit()
    assert created.status_code == 201, created.text
    app_id = created.json()["id"]
    url = f"/api/v1/applications/{app_id}"
    await poll(api, url, applicant.headers, lambda b: b["status"] == "in_review")

    [review] = await find(client, f'Uscc = "{applicant.uscc}" AND Stage = "municipal"')
    assert review.id == f"review-{app_id}"
    attributes = review.typed_search_attributes
    assert (attributes.get(USCC), attributes.get(PROGRAM), attributes.get(TIER)) == (
        applicant.uscc,
        "demo",
        "specialized_new",
    )

    municipal = reviewer_headers(settings, "municipal", "500100")
    approved = await api.post(
        f"{url}/decisions", headers=municipal, json={"decision": "approve", "reason": "ok"}
    )
    assert approved.status_code == 200, approved.text
    [moved] = await find(client, f'Uscc = "{applicant.uscc}" AND Stage = "provincial"')
    assert moved.id == review.id
    returned = await api.post(
        f"{url}/decisions",
        headers=reviewer_headers(settings, "provincial", "500000"),
        json={"decision": "return", "reason": "more figures"},
    )
    assert returned.status_code == 200, returned.text
    # Returned to the enterprise: still the provincial level's (the level it goes back to).
    described = await client.get_workflow_handle(review.id).describe()
    assert described.typed_search_attributes.get(STAGE) == "provincial"

    # The history with the upserts (behind the patch) replays against today's code.
    history = await client.get_workflow_handle(review.id).fetch_history()
    replayer = Replayer(workflows=workflow_classes(), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


def test_temporal_setup_registers_once(dev_server: Any, tmp_path: Path) -> None:
    """`giantflow temporal-setup` on a server that has the attributes changes nothing, and says so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    env["GIANTFLOW_TEMPORAL_ADDRESS"] = dev_server.client.service_client.config.target_host
    env["GIANTFLOW_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [str(BIN_DIR / "giantflow"), "temporal-setup"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "search attributes already registered in default"
