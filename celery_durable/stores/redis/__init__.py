"""The Redis journal store."""

from celery_durable.stores.redis.store import RedisJournalStore

__all__ = ["RedisJournalStore"]
