"""Answering from memory on the event loop, and from the lake in the threadpool.

A plain `def` route costs a hop to the threadpool and back on every request, which at a
thousand requests a second is most of the work when the answer is already in memory. The
hot routes are coroutines that first try to answer with `memory_only()` on; the first cache
miss raises `WouldBlock` before anything is read, and the same answer is then computed in
the threadpool, where reading the lake cannot stall the other requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from smartcity_api.store import WouldBlock, memory_only

T = TypeVar("T")


async def answer(compute: Callable[[], T]) -> T:
    """`compute()`, on the event loop when memory holds all it needs, else in a thread."""
    try:
        with memory_only():
            return compute()
    except WouldBlock:
        return await run_in_threadpool(compute)
