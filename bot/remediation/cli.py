"""``alertpilot approve`` / ``alertpilot reject``: decide a pending step from a shell.

They work on the store directly, like ``alertpilot incidents``: the decision is
recorded with its timeline event, and an approval queues the step's run job, which the
running server picks up. Exit status 0 when recorded, 1 when the incident or step is
unknown or the step is not awaiting approval (the message says which).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable

from bot import keys
from bot.errors import NotFound
from bot.remediation.approvals import ApprovalConflict
from bot.remediation.records import StepRecord
from bot.settings import load_settings


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


async def _decide(args: argparse.Namespace, approve: bool) -> StepRecord:
    from bot.app import create_app  # the same wiring as the server: subscribers, settings

    app = create_app(load_settings(args.config))
    store = app[keys.STORE]
    store.subscribers = app[keys.HANDLERS].subscribers
    await store.open()
    try:
        engine = app[keys.REMEDIATION]
        if approve:
            return await engine.approve(args.incident, args.step, actor=args.actor, source="cli")
        return await engine.reject(
            args.incident, args.step, actor=args.actor, source="cli", reason=args.reason
        )
    finally:
        await store.close()


def _run(args: argparse.Namespace, approve: bool) -> int:
    try:
        record = asyncio.run(_decide(args, approve))
    except (NotFound, ApprovalConflict) as exc:
        print(f"{'approve' if approve else 'reject'}: {exc}", file=sys.stderr)
        return 1
    if approve:
        print(
            f"incident #{args.incident}: {record.key} approved by {args.actor}; the server runs it"
        )
    else:
        print(f"incident #{args.incident}: {record.key} rejected by {args.actor}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _run(args, approve=True)


def cmd_reject(args: argparse.Namespace) -> int:
    return _run(args, approve=False)


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``approve`` and ``reject`` with the CLI's ``command(name, help)`` factory."""
    for name, func, help_text in (
        ("approve", cmd_approve, "approve a pending remediation step"),
        ("reject", cmd_reject, "reject a pending remediation step"),
    ):
        parser = command(name, help_text)
        parser.add_argument("incident", type=int, help="incident id")
        parser.add_argument("step", help="remediation step name")
        parser.add_argument("--actor", default=default_actor(), help="who decides (default: $USER)")
        if name == "reject":
            parser.add_argument("--reason", default="", help="why (goes on the timeline)")
        parser.set_defaults(func=func)
