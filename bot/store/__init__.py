"""Persistence: the ``Store`` interface; SQLite (``SqliteStore``) and PostgreSQL
(``bot.store.postgres.PostgresStore``, imported where used) implement it."""

from bot.store.base import ApplyResult, InboxItem, Job, Stats, Store
from bot.store.sqlite import SqliteStore

__all__ = ["ApplyResult", "InboxItem", "Job", "SqliteStore", "Stats", "Store"]
