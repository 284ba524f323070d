"""An in-memory journal store with the Redis store's semantics, for one process.

It keeps journals for eager execution and direct calls, and for unit tests of durable
code. It keeps nothing across processes, so it cannot make anything durable. Each
method mirrors one Lua script of ``stores/redis/lua``, and the modules mirror
``stores/redis``'s; ``tests/contract`` runs the same behaviour against both stores so
that they cannot drift apart.
"""

from celery_durable.stores.memory.store import MemoryJournalStore

__all__ = ["MemoryJournalStore"]
