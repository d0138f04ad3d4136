"""What alertpilot ships besides its code: the default config and prompt templates
(``configs/``), the playbooks (``playbooks/``) and the alerting rules (``rules/``).

From a source tree they are the repository's own folders. An installed alertpilot (a
wheel) carries copies under ``bot/_shipped/``, made when the wheel is built
(``setup.py``), so ``pip install .`` gives a working ``check``, narratives and playbooks.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_SOURCE_TREE = _PACKAGE.parent
_COPIES = _PACKAGE / "_shipped"
NAMES = ("configs", "playbooks", "rules")


def shipped(name: str) -> Path:
    """The folder ``name`` (one of ``NAMES``): the source tree's, else the packaged copy."""
    if name not in NAMES:
        raise ValueError(f"alertpilot ships no {name!r}")
    source = _SOURCE_TREE / name
    return source if source.is_dir() else _COPIES / name
