"""Process-wide tuning for the long-running parts (`giantflow api`, `giantflow worker`).

CPython's cyclic collector walks every tracked object in its oldest generation on a full collection. Once the
API or the worker has imported FastAPI, SQLAlchemy, pydantic and temporalio, that is some 120,000 objects that
will live as long as the process, and a full collection of them took 110 ms on the benchmark machine: a stall
of every request or workflow task in flight, several times a minute under load (docs/performance.md).
"""

from __future__ import annotations

import gc


def settle_heap(gen0_threshold: int | None = None) -> None:
    """Call once start-up has built what lives for the whole process: collect, then move every surviving
    object to the permanent generation (``gc.freeze``) so later collections never walk it again.

    With ``gen0_threshold`` (the API), the youngest generation is collected every that many allocations
    instead of 700, so the objects of requests in flight are promoted, and the older generations collected,
    less often. The worker keeps CPython's thresholds: the workflows it evicts from its cache are cycles, and
    collecting them less often raised its memory from 223 to 271 MiB with 3,000 workflows open."""
    gc.collect()
    gc.freeze()
    if gen0_threshold is not None:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
