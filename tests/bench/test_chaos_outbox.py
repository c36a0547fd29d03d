"""The outbox chaos run's judgement (bench/chaos.py ``judge_receipts``): what the receiver logged against
the outbox. The run itself (PostgreSQL, relay kills, a crash) is `make chaos`; here only that a missing,
misordered or mislabelled delivery is caught, and that duplicates with their event's webhook-id are not."""

from __future__ import annotations

from typing import Any

from bench.chaos import Emitted, judge_receipts
from devtools.receiver import Received

EVENTS = [
    Emitted(id="e1", seq=1, aggregate="a", reason="a0", at=100.0),
    Emitted(id="e2", seq=2, aggregate="b", reason="b0", at=100.0),
    Emitted(id="e3", seq=3, aggregate="a", reason="a1", at=100.0),
    Emitted(id="e4", seq=4, aggregate="a", reason="a2", at=100.0),
]


def receipt(webhook_id: str, reason: str, at: float = 100.5, **data: Any) -> Received:
    body = {"type": "application.decided", "timestamp": "t", "data": {"reason": reason, **data}}
    return Received(webhook_id=webhook_id, timestamp="0", signature="v1,x", body=body, at=at)


def test_every_event_once_in_order_with_duplicates_of_the_same_id_passes() -> None:
    received = [
        receipt("e1", "a0"),
        receipt("e2", "b0"),
        receipt("e1", "a0"),  # the relay died before recording the first delivery
        receipt("e3", "a1"),
        receipt("e4", "a2", at=101.0),
        receipt("e4", "a2"),
    ]
    report = judge_receipts(EVENTS, received, planned=4)
    assert report["failures"] == []
    assert (report["delivered"], report["duplicates"], report["out_of_order"]) == (4, 2, 0)
    assert report["lag_ms"]["max"] == 1000


def test_a_later_event_of_an_aggregate_first_delivered_before_an_earlier_one_is_out_of_order() -> None:
    received = [receipt("e1", "a0"), receipt("e2", "b0"), receipt("e4", "a2"), receipt("e3", "a1")]
    report = judge_receipts(EVENTS, received, planned=4)
    assert report["out_of_order"] == 1
    assert report["out_of_order_samples"] == ["aggregate a: seq 3 arrived after seq 4"]
    assert report["failures"] == ["1 out of order"]


def test_missing_events_and_duplicates_under_another_id_or_body_fail() -> None:
    received = [
        receipt("e1", "a0"),
        receipt("e9", "a0"),  # a duplicate under another webhook-id
        receipt("e1", "a0", changed=True),  # a duplicate whose body changed
        receipt("e2", "b0"),
    ]
    report = judge_receipts(EVENTS, received, planned=4)
    assert (report["missing"], report["receipts_with_other_id"], report["changed_bodies"]) == (2, 1, 1)
    assert report["failures"] == [
        "2 events never delivered",
        "1 receipts with another event's webhook-id, 1 changed bodies",
    ]


def test_an_event_emitted_twice_or_not_at_all_fails() -> None:
    twice = [*EVENTS, Emitted(id="e5", seq=5, aggregate="b", reason="b0", at=100.0)]
    report = judge_receipts(twice, [], planned=5)
    assert report["failures"][0] == "emitted 4 distinct events of 5 planned (1 twice)"
