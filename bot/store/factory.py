"""The store ``store.url`` names: SQLite (``sqlite:///PATH``) or PostgreSQL
(``postgresql://...``), built the one way for the server and every command."""

from __future__ import annotations

from collections.abc import Callable

from bot.settings import StoreSettings
from bot.store.base import Store, Subscriptions


def build_store(
    settings: StoreSettings,
    *,
    clock: Callable[[], float],
    subscribers: Subscriptions | None = None,
    inbox_writer: bool = True,
) -> Store:
    """A closed store (``open()`` it). ``inbox_writer``: SQLite's child process that
    commits webhooks, which a command that takes none does without."""
    if settings.backend == "postgresql":
        from bot.store.postgres import PostgresStore  # psycopg loads only when it is used

        return PostgresStore(
            settings.url,
            subscribers=subscribers,
            clock=clock,
            lease=settings.lease,
            pool_size=settings.pool_size,
            connect_timeout=settings.busy_timeout,
            inbox_writer=inbox_writer,
        )
    from bot.store.sqlite import SqliteStore

    return SqliteStore(
        settings.sqlite_path,
        subscribers=subscribers,
        busy_timeout=settings.busy_timeout,
        clock=clock,
        inbox_writer=inbox_writer,
    )
