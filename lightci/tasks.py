"""``huey_consumer lightci.tasks.huey``: the worker's queue, made when the consumer asks.

A thin alias for lightci.worker; the queue is built from the settings of
LIGHTCI_HOME on first access, not at import.
"""

from __future__ import annotations

from lightci import worker
from lightci.config import settings


def __getattr__(name: str):
    if name == "huey":
        return worker.prepare(settings())
    raise AttributeError(f"module 'lightci.tasks' has no attribute {name!r}")
