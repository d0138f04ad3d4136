"""``alertpilot explain INCIDENT_ID [--audience stakeholder]``: print an incident's narrative.

It works on the store directly, like ``alertpilot incidents``, with the configured
provider: the LLM narrative when it can (from the cache when the server already wrote
one for the same facts), the template otherwise. The text goes to stdout; where it came
from goes to stderr. Exit status 0, 1 for an unknown incident, 2 for a broken template.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable

from bot.errors import NotFound
from bot.narrative.prompt import AUDIENCES
from bot.narrative.standalone import explain_incident
from bot.narrative.templates import PromptTemplateError
from bot.settings import load_settings


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("explain", "print an incident's narrative (LLM or template)")
    p.add_argument("incident_id", type=int, help="incident number")
    p.add_argument("--audience", choices=AUDIENCES, default="engineer")
    p.add_argument("--json", action="store_true", help="the narrative and its metadata as JSON")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        narrative = asyncio.run(explain_incident(settings, args.incident_id, args.audience))
    except NotFound:
        print(f"incident {args.incident_id} not found", file=sys.stderr)
        return 1
    except PromptTemplateError as exc:
        print(f"narrative template error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(narrative.to_data(), indent=2, ensure_ascii=False))
        return 0
    print(narrative.text)
    origin: str = narrative.source
    if narrative.model:
        origin += f", {narrative.model}"
    if narrative.cached:
        origin += ", cached"
    if narrative.reason and narrative.source == "template":
        origin += f", {narrative.reason}"
    print(f"({origin})", file=sys.stderr)
    return 0
