"""The playbooks page: each loaded playbook with what became of its incidents over the
last 7 and 30 days (``Store.playbook_stats``), and playbooks no longer loaded that
still have incidents in that time."""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.durations import format_duration
from bot.playbook.registry import PlaybookSet
from bot.store.base import PlaybookStats, Store

WINDOWS = (("7 days", 7 * 86400.0), ("30 days", 30 * 86400.0))


@dataclass(frozen=True)
class Window:
    label: str
    matched: int
    acknowledged: int
    mtta: str
    resolved: int
    mttr: str
    ran: int
    verified: int
    failed: int
    rolled_back: int


@dataclass(frozen=True)
class PlaybookRow:
    name: str
    description: str
    loaded: bool
    diagnostics: int
    remediations: int
    windows: list[Window]


def _mean(seconds: float | None) -> str:
    return "—" if seconds is None else format_duration(max(seconds, 0.0)) or "0s"


def _window(label: str, stats: PlaybookStats | None) -> Window:
    s = stats or PlaybookStats(playbook="")
    return Window(
        label=label,
        matched=s.matched,
        acknowledged=s.acknowledged,
        mtta=_mean(s.mean_ack),
        resolved=s.resolved,
        mttr=_mean(s.mean_resolve),
        ran=s.ran,
        verified=s.verified,
        failed=s.failed,
        rolled_back=s.rolled_back,
    )


async def playbook_rows(store: Store, loaded: PlaybookSet | None, now: float) -> list[PlaybookRow]:
    by_window = []
    for label, back in WINDOWS:
        stats = await store.playbook_stats(since=now - back)
        by_window.append((label, {s.playbook: s for s in stats}))
    names = [p.name for p in loaded or []]
    seen = set(names)
    names += sorted({name for _, stats in by_window for name in stats} - seen)
    rows = []
    for name in names:
        playbook = loaded.get(name) if loaded is not None else None
        rows.append(
            PlaybookRow(
                name=name,
                description=playbook.description if playbook else "",
                loaded=playbook is not None,
                diagnostics=len(playbook.diagnostics) if playbook else 0,
                remediations=len(playbook.remediations) if playbook else 0,
                windows=[_window(label, stats.get(name)) for label, stats in by_window],
            )
        )
    return rows
