"""A real PostgreSQL server for tests: Debian's ``postgresql`` package, started once per
session on a free loopback port in a temporary data directory, with a fresh database for
each test.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user
(``runuser``), in a directory that user owns; the socket directory is inside it too, so
nothing outside the temporary directory is touched. ``fsync`` stays on, as in production:
a commit the tests count on is a commit on disk. A missing binary is an error, never a
skip: run ``scripts/install-test-deps.sh``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from stack import free_port

SERVER_USER = "postgres"  # the account the server runs as when the tests run as root
SUPERUSER = "alertpilot"  # the database role the tests connect as (trust on loopback)


def pg_bindir() -> Path:
    """The newest installed ``/usr/lib/postgresql/<major>/bin``."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL's server binaries are missing (/usr/lib/postgresql/*/bin/pg_ctl):"
            " run scripts/install-test-deps.sh"
        )
    return found[-1].parent


@dataclass
class PgServer:
    """A running server: ``url(database)`` to connect, ``create_database`` per test."""

    port: int
    data_dir: Path
    host: str = "127.0.0.1"
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True)

    def create_database(self) -> str:
        name = f"test_{os.getpid()}_{next(self._counter)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_server_user(argv: list[str]) -> list[str]:
    """Root cannot run PostgreSQL: run it as ``postgres`` then."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", SERVER_USER, "--", *argv]


def _run(argv: list[str]) -> None:
    done = subprocess.run(_as_server_user(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


@contextlib.contextmanager
def pg_server() -> Iterator[PgServer]:
    """Start a server in a temporary directory; stop it and delete the directory after."""
    bindir = pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="alertpilot-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVER_USER)
        os.chown(root, account.pw_uid, account.pw_gid)
    data = root / "data"
    log_file = root / "server.log"
    started = False
    try:
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )
        for _ in range(3):  # free_port() is racy: retry when the port got taken meanwhile
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root}"
                " -c fsync=on -c synchronous_commit=on -c max_connections=200"
                " -c shared_buffers=128MB"
            )
            try:
                _run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(log_file),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "30",
                        "start",
                    ]
                )
            except RuntimeError:
                if log_file.exists() and "already in use" in log_file.read_text():
                    continue
                raise
            started = True
            yield PgServer(port, data)
            return
        raise RuntimeError("no free port for PostgreSQL after 3 tries")
    finally:
        if started:
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)
