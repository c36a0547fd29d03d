"""Process-wide tuning for the long-running parts (`giantflow api`, `giantflow worker`).

CPython's cyclic collector walks every tracked object in its oldest generation on a full collection. Once the
API or the worker has imported FastAPI, SQLAlchemy, pydantic and temporalio, that is some 120,000 objects that
will live as long as the process, and a full collection of them took 110 ms on the benchmark machine: a stall
of every request or workflow task in flight, several times a minute under load (docs/performance.md).
"""

from __future__ import annotations

import gc


def settle_heap(gen0_threshold: int) -> None:
    """Call once start-up has built what lives for the whole process: collect, then move every surviving
    object to the permanent generation (``gc.freeze``) so later collections never walk it again, and collect
    the youngest generation every ``gen0_threshold`` allocations instead of 700, so that objects of the
    requests in flight are promoted, and the older generations collected, less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
