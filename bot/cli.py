"""The ``alertpilot`` command: serve, check, simulate, incidents, migrate, store-copy,
approve, reject."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from bot.core.alerts import parse_group
from bot.core.clock import SystemClock
from bot.core.incidents import Status
from bot.errors import ConfigError, PayloadError, StoreError
from bot.narrative.cli import add_commands as add_narrative_commands
from bot.remediation.cli import add_commands as add_remediation_commands
from bot.runtime import logs
from bot.runtime.loop import AckFirstLoop
from bot.server.exposure import exposure, host_warnings, refusal
from bot.settings import DEFAULT_CONFIG, Settings, load_settings
from bot.store.factory import build_store

log = logging.getLogger("bot.cli")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


async def _freeze_heap(app: web.Application) -> None:
    """Move everything built at startup (modules, schemas, playbooks, the app) out of the
    garbage collector's sight: it is never garbage, and scanning it again and again in
    full collections cost the webhook more time than parsing the payload."""
    gc.collect()
    gc.freeze()


async def _serve(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain: aiohttp's runner with a cap on open
    connections and a time limit on each request's headers (``bot.server.connections``)."""
    from bot import keys
    from bot.server.connections import BACKLOG, deepen_listen_queue, raise_open_files

    server = settings.server
    connections = app[keys.CONNECTIONS]
    connections.limit = raise_open_files(server.max_connections)
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=server.idle_timeout,
        shutdown_timeout=server.shutdown_timeout,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        assert runner.server is not None
        connections.attach(runner.server)
        site = web.TCPSite(runner, server.host, server.port, backlog=BACKLOG)
        await site.start()
        deepen_listen_queue(getattr(site, "_server", None))  # aiohttp keeps it private
        print(f"======== Running on {site.name} ========", file=sys.stderr)
        await stop.wait()
    finally:
        await runner.cleanup()


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.app import create_app

    settings = _settings(args)
    if args.listen:  # the command line wins over server.listen
        try:
            server = settings.server.model_validate(
                {**settings.server.model_dump(), "listen": args.listen}
            )
        except ValidationError:
            raise ConfigError([f"--listen {args.listen!r}: expected HOST:PORT"]) from None
        settings = settings.model_copy(update={"server": server})
    logs.configure(settings.logging.level, settings.logging.format, settings.secret_values())
    refused = refusal(settings)
    if refused is not None:
        print(f"refusing to serve: {refused}", file=sys.stderr)
        return 2
    for endpoint in exposure(settings):  # what is open, said at every start
        log.info("exposure: %s", endpoint.line())
    for warning in risky(settings):  # what `alertpilot check` warns about, in the log too
        log.warning("config: %s", warning)
    app = create_app(settings)
    app.on_startup.append(_freeze_heap)
    try:
        with asyncio.Runner(loop_factory=AckFirstLoop) as runner:
            runner.run(_serve(app, settings))
    except OSError as exc:  # the address is taken, or not this host's
        print(
            f"cannot listen on {settings.server.listen}: {exc.strerror or exc}"
            " (set server.listen in the config, or serve --listen HOST:PORT)",
            file=sys.stderr,
        )
        return 4
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from bot.check import check_config, find_promtool

    report = check_config(args.config, promtool=find_promtool())
    if report.settings is not None:
        for endpoint in exposure(report.settings):
            print(f"endpoint: {endpoint.line()}")
        refused = refusal(report.settings)
        if refused is not None:
            report.problems.append(f"serve would refuse to start: {refused}")
        for warning in [*risky(report.settings), *report.warnings]:
            print(f"warning: {warning}")
        for need in report.label_needs:  # not a risk: what an alert needs for each step
            print(f"note: {need}")
        problem, note = _probe_store(report.settings)
        if problem is not None:
            report.problems.append(problem)
        if note is not None:
            print(f"store: {note}")
    if report.problems:
        for problem in report.problems:
            print(problem, file=sys.stderr)
        print(f"{len(report.problems)} problem(s) found", file=sys.stderr)
        return 2
    print(
        f"{args.config}: ok ({report.playbooks} playbook(s) in {report.playbook_files} "
        f"file(s), {report.prompt_files} prompt template(s))"
    )
    return 0


def _probe_store(settings: Settings) -> tuple[str | None, str | None]:
    """A PostgreSQL store is reached over the network: connect, as serve will, and say
    what answered (a problem, or a note). A SQLite file is made at start."""
    if settings.store.backend != "postgresql":
        return None, None
    from bot.store.postgres import PostgresStore

    store = PostgresStore(
        settings.store.url, clock=SystemClock().now, connect_timeout=settings.store.busy_timeout
    )
    try:
        return None, asyncio.run(store.probe())
    except StoreError as exc:
        return f"store.url: {exc}", None


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the store's schema up to date (serve does it too, at every start)."""
    from bot.store.postgres import PostgresStore

    settings = _settings(args)

    async def run() -> str:
        store = build_store(settings.store, clock=SystemClock().now, inbox_writer=False)
        if isinstance(store, PostgresStore):
            applied = await store.migrate()
            if not applied:
                return "PostgreSQL store: schema already up to date"
            return f"PostgreSQL store: applied migration(s) {', '.join(map(str, applied))}"
        await store.open()  # SQLite migrates as it opens
        await store.close()
        return f"SQLite store {settings.store.sqlite_path}: schema up to date"

    print(asyncio.run(run()))
    return 0


def cmd_store_copy(args: argparse.Namespace) -> int:
    """Copy a SQLite store into an empty PostgreSQL database (moving to several replicas)."""
    from bot.settings import StoreSettings
    from bot.store.copy import copy_store

    try:
        source = StoreSettings(url=args.source)
        target = StoreSettings(url=args.target)
    except ValidationError as exc:
        problems = [f"{error['msg']}" for error in exc.errors()]
        raise ConfigError([f"store-copy: {p}" for p in problems]) from None
    if source.backend != "sqlite" or target.backend != "postgresql":
        raise ConfigError(["store-copy: --from takes sqlite:///PATH, --to postgresql://..."])
    if not Path(source.sqlite_path).is_file():
        raise ConfigError([f"store-copy: {source.sqlite_path}: no such SQLite store"])
    report = asyncio.run(copy_store(source.sqlite_path, target.url, clock=SystemClock().now))
    for line in report.lines():
        print(line)
    return 0


MIN_SECRET_LENGTH = 16


def risky(settings: Settings) -> list[str]:
    """Configurations that work but that an operator should know are risky."""
    out = []
    if settings.server.webhook_token is None and settings.server.webhook_basic_auth is None:
        out.append(
            "server.webhook_token is not set: anyone who can reach POST /alertmanager "
            "can open incidents"
        )
    basic = settings.server.webhook_basic_auth
    for name, secret in (
        ("server.webhook_token", settings.server.webhook_token),
        ("server.webhook_basic_auth.password", basic.password if basic else None),
        ("server.api_token", settings.server.api_token),
    ):
        if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
            out.append(
                f"{name} is shorter than {MIN_SECRET_LENGTH} characters: easy to guess "
                "(e.g. openssl rand -hex 24)"
            )
    llm = settings.llm
    if llm.provider == "openai":
        if llm.api_key is None and not os.environ.get("OPENAI_API_KEY"):
            out.append(
                "llm.provider is openai but llm.api_key is not set (nor OPENAI_API_KEY): "
                "every narrative will be the template"
            )
        if not llm.base_url:
            out.append(
                "llm.provider is openai and llm.base_url is not set: incident facts go to "
                "OpenAI's own API (set llm.base_url for Ollama, vLLM or a proxy)"
            )
    from bot.check import risky_remediation
    from bot.console.advice import console_warnings

    out.extend(host_warnings(settings))
    out.extend(risky_remediation(settings))
    out.extend(console_warnings(settings))
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    from bot.simulate import simulate, text_lines

    settings = _settings(args)
    try:
        group = parse_group(Path(args.payload).read_bytes())
    except OSError as exc:
        print(f"{args.payload}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    except PayloadError as exc:
        print(f"{args.payload}: {exc}", file=sys.stderr)
        return 2
    plan = asyncio.run(simulate(settings, group))
    if args.json:
        print(json.dumps(plan, indent=2, ensure_ascii=False))
    else:
        print("\n".join(text_lines(plan)))
    return 0


def cmd_incidents(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def read() -> list[dict[str, object]]:
        store = build_store(settings.store, clock=SystemClock().now, inbox_writer=False)
        await store.open()
        try:
            status = Status(args.status) if args.status else None
            found = await store.list_incidents(status=status, limit=args.limit)
            return [incident.to_json(with_timeline=False) for incident in found]
        finally:
            await store.close()

    incidents = asyncio.run(read())
    if args.json:
        print(json.dumps(incidents, indent=2, ensure_ascii=False))
        return 0
    if not incidents:
        print("no incidents")
    for item in incidents:
        alerts = item["alerts"]
        count = len(alerts) if isinstance(alerts, list) else 0
        print(
            f"#{item['id']:<5} {item['severity']}  {item['status']:<12} {item['title']}"
            f"  ({count} alert(s))"
        )
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alertpilot")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alertpilot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"alertpilot {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", default=str(DEFAULT_CONFIG), help="config file (YAML)")
        return p

    p = command("serve", "run the webhook server and workers")
    p.add_argument("--listen", metavar="HOST:PORT", help="overrides server.listen")
    p.set_defaults(func=cmd_serve)
    command("check", "validate the config, playbooks and prompt templates").set_defaults(
        func=cmd_check
    )
    p = command("simulate", "show what an Alertmanager payload would do, with no side effects")
    p.add_argument("payload", help="Alertmanager webhook payload (JSON file)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate)
    p = command("incidents", "list incidents from the store")
    p.add_argument("--status", choices=[s.value for s in Status])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_incidents)
    command("migrate", "bring the store's schema up to date").set_defaults(func=cmd_migrate)
    p = sub.add_parser("store-copy", help="copy a SQLite store into an empty PostgreSQL database")
    p.add_argument("--from", dest="source", required=True, metavar="sqlite:///PATH")
    p.add_argument("--to", dest="target", required=True, metavar="postgresql://...")
    p.set_defaults(func=cmd_store_copy)
    add_remediation_commands(command)
    add_narrative_commands(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"store error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
