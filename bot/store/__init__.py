"""Persistence: the ``Store`` interface and its SQLite implementation."""

from bot.store.base import ApplyResult, InboxItem, Job, Stats, Store
from bot.store.sqlite import SqliteStore

__all__ = ["ApplyResult", "InboxItem", "Job", "SqliteStore", "Stats", "Store"]
