"""A built wheel, installed away from the source tree, works: ``check`` finds its
default config, prompt templates and playbooks, and ``explain`` writes a narrative."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = ROOT / "tests" / "fixtures" / "alertmanager" / "captured-firing.json"

SEED = textwrap.dedent(
    """
    import asyncio, json, sys
    from bot.core.alerts import parse_group
    from bot.settings import Severity
    from bot.store.sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(sys.argv[1], clock=lambda: 1_800_000_000.0)
        await store.open()
        text = open(sys.argv[2]).read()
        inbox = await store.enqueue_payload("alertmanager", text)
        await store.apply_group(inbox, parse_group(text), Severity.P1, 1_800_000_000.0)
        await store.close()

    asyncio.run(main())
    """
)


def run(args: list[str], cwd: Path, target: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_an_installed_wheel_checks_its_defaults_and_writes_narratives(tmp_path: Path) -> None:
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    elsewhere.mkdir()
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("alertpilot-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    where = run(["-c", "import bot; print(bot.__file__)"], elsewhere, target)
    assert where.stdout.strip() == str(target / "bot" / "__init__.py")  # not the source tree
    console = target / "bot" / "console"  # the console's templates and assets come along
    assert (console / "templates" / "incident.html").is_file()
    assert (console / "static" / "console.js").is_file()

    check = run(["-m", "bot.cli", "check"], elsewhere, target)  # the default config
    assert check.returncode == 0, check.stderr
    # every shipped playbook and prompt came with it: the same count as in the source tree
    source = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check", "--config", "configs/alertpilot.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    counts = source.stdout.rpartition(": ok (")[2]
    assert counts.startswith(tuple("123456789")) and "playbook(s) in" in counts, source.stdout
    assert check.stdout.endswith(f": ok ({counts}"), (check.stdout, counts)
    assert str(target / "bot" / "_shipped" / "configs" / "alertpilot.yaml") in check.stdout

    db = elsewhere / "a.db"
    config = elsewhere / "mine.yaml"
    config.write_text(f"store:\n  url: sqlite:///{db}\nplaybooks:\n  paths: []\n")
    seed = run(["-c", SEED, str(db), str(PAYLOAD)], elsewhere, target)
    assert seed.returncode == 0, seed.stderr
    explain = run(["-m", "bot.cli", "explain", "1", "--config", str(config)], elsewhere, target)
    assert explain.returncode == 0, explain.stderr
    assert "*[P1] HighErrorRate (service=checkout)*" in explain.stdout
    assert "(template, provider)" in explain.stderr


def test_the_projects_venv_has_no_setuptools_with_known_flaws() -> None:
    """``scripts/venv.sh`` upgrades the setuptools that ``python -m venv`` seeds (65.5 on
    Python 3.11: CVE-2024-6345, CVE-2025-47273)."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("not run from the venv scripts/venv.sh makes")
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return  # none at all is none with flaws
    release = tuple(int(part) for part in version.split(".")[:3] if part.isdigit())
    assert release >= (78, 1, 1), version
