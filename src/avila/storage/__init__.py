"""Storage: one interface (:class:`Store`), one module per backend."""

from avila.storage.base import Store
from avila.storage.factory import open_store

__all__ = ["Store", "open_store"]
