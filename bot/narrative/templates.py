"""The prompt and narrative templates: files a user can change.

Shipped in ``configs/prompts/``; a file of the same name in ``llm.prompts_dir`` wins.
Templates run in Jinja2's sandbox with undefined names as errors.

    system.txt                     the system prompt (plain text, not a template)
    user_prompt.j2                 the user message: task, audience, the delimited data
    narrative_engineer.md.j2       template narratives, written from the facts alone
    narrative_stakeholder.md.j2
    narrative_storm.md.j2          one summary for an alert storm
    narrative_rca.md.j2            an RCA document explained (POST /api/v1/narratives)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from bot.errors import RenderingError
from bot.narrative.context import pairs
from bot.shipped import shipped

DEFAULT_DIR = shipped("configs") / "prompts"
TEMPLATE_FILES = (
    "system.txt",
    "user_prompt.j2",
    "narrative_engineer.md.j2",
    "narrative_stakeholder.md.j2",
    "narrative_storm.md.j2",
    "narrative_rca.md.j2",
)


class PromptTemplateError(RenderingError):
    """A prompt or narrative template is missing or fails to render."""


def fmt_value(value: Any, unit: str = "") -> str:
    """A diagnostic value for people: ``0.125, "ratio"`` -> ``12.5%``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if unit == "ratio":
        return f"{value * 100:.3g}%"
    if unit == "percent":
        return f"{value:.3g}%"
    if unit == "seconds":
        return f"{value:.3g} s"
    if unit == "ms":
        return f"{value:.4g} ms"
    if unit == "per_second":
        return f"{value:.3g}/s"
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or suffix == "TiB":
                return f"{value:.3g} {suffix}"
            value /= 1024
    return f"{value:.4g}"


def fmt_when(value: str | None) -> str:
    """``2027-01-15T08:00:00Z`` -> ``2027-01-15 08:00 UTC``."""
    if not value:
        return ""
    return value.replace("T", " ")[:16] + " UTC" if value.endswith("Z") else value


class PromptBook:
    def __init__(self, prompts_dir: str | Path | None = None) -> None:
        loaders = [FileSystemLoader(str(DEFAULT_DIR))]
        if prompts_dir is not None:
            loaders.insert(0, FileSystemLoader(str(prompts_dir)))
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters["pairs"] = pairs
        self.env.filters["value"] = fmt_value
        self.env.filters["when"] = fmt_when

    def source(self, name: str) -> str:
        loader = self.env.loader
        assert loader is not None
        try:
            text, _, _ = loader.get_source(self.env, name)
        except TemplateError as exc:
            raise PromptTemplateError(f"{name}: {exc}") from exc
        return text

    def system(self) -> str:
        return self.source("system.txt").strip()

    def render(self, name: str, **values: Any) -> str:
        try:
            return self.env.get_template(name).render(**values).strip()
        except TemplateError as exc:
            raise PromptTemplateError(f"{name}: {type(exc).__name__}: {exc}") from exc

    def check(self) -> list[str]:
        """Problems with the templates (missing file, syntax error), one line each."""
        problems = []
        for name in TEMPLATE_FILES:
            try:
                if name.endswith(".j2"):
                    self.env.get_template(name)
                else:
                    self.source(name)
            except (TemplateError, PromptTemplateError) as exc:
                problems.append(f"{name}: {exc}")
        return problems
