"""Activities of expert panels (services/applications/panels.py): the draw, an expert's answer, the rule's
decision. Each attempt is one transaction and idempotent (the draw by its seed, an answer by its seat, the
decision by the panel's status)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from services import contracts
from services.applications import panels
from workflows.base import Activities


class PanelActivities(Activities):
    def all(self) -> list[Callable[..., Any]]:
        return [self.draw_panel, self.record_panel_score, self.close_panel]

    @activity.defn(name="draw_panel")
    async def draw_panel(self, data: contracts.PanelDraw) -> contracts.PanelDrawn:
        return await self._in_transaction(panels.record_draw, data=data)

    @activity.defn(name="record_panel_score")
    async def record_panel_score(self, data: contracts.PanelScore) -> contracts.PanelScored:
        return await self._in_transaction(panels.record_score, data=data)

    @activity.defn(name="close_panel")
    async def close_panel(self, data: contracts.PanelClose) -> contracts.PanelVerdict:
        return await self._in_transaction(panels.close_panel, data=data)
