"""YAML files that remember where each value came from.

Config and playbook errors must name the file, the line and the key path. PyYAML's
node tree knows the lines; this module builds plain Python data from it, keeps a map
from key path to line, substitutes ``${VAR}`` / ``${VAR:-default}`` in string
scalars, rejects duplicate keys, and turns a pydantic ``ValidationError`` into
``file:line: path: message`` lines.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bot.errors import ConfigError

Loc = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


@dataclass
class Sourced:
    """Data loaded from one YAML file, with the line of every key path."""

    path: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc`` or of its nearest ancestor that has one."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def where(self, loc: Loc) -> str:
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line is not None else self.path


def format_loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def substitute_env(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal ``$``."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is not None and (value != "" or default is None):
            return value
        if default is not None:
            return default
        raise ConfigError(
            [f"{where}: environment variable {name} is not set (use ${{{name}:-default}})"]
        )

    return _ENV_REF.sub(repl, text)


# The plain data a config or playbook holds. Any other tag (``!!python/...``, ``!!binary``,
# ``!custom``) is refused: SafeLoader would refuse some and quietly drop others.
_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map")
)
MAX_VALUES = 100_000  # values in one document once aliases are expanded


class _Builder:
    def __init__(self, path: str, env: Mapping[str, str] | None) -> None:
        self.path = path
        self.env = env
        self.lines: dict[Loc, int] = {}
        self.problems: list[str] = []
        self._constructor = yaml.SafeLoader("")
        self._open: set[int] = set()  # nodes being built: an alias back to one is a cycle
        self._values = 0

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(loc, line)
        where = f"{self.path}:{line}: {format_loc(loc)}"
        if node.tag not in _TAGS:
            self.problems.append(f"{where}: unsupported YAML tag {node.tag}")
            return None
        self._values += 1
        if self._values > MAX_VALUES:  # a few aliases of aliases expand exponentially
            raise ConfigError([f"{where}: more than {MAX_VALUES:,} values (aliases expanded)"])
        if id(node) in self._open:
            self.problems.append(f"{where}: an alias refers to the value that contains it")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc, where)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, where)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc, where: str) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        try:
            self._constructor.flatten_mapping(node)  # ``<<`` merge keys
        except yaml.YAMLError as exc:
            self.problems.append(f"{where}: {getattr(exc, 'problem', None) or exc}")
            return out
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = None
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag in _TAGS:
                key = self._scalar(key_node, f"{self.path}:{key_line}: {format_loc(loc)}")
            if not isinstance(key, str | int | float | bool) or key is None:
                self.problems.append(f"{self.path}:{key_line}: bad key")
                continue
            if key in out:
                self.problems.append(
                    f"{self.path}:{key_line}: {format_loc((*loc, str(key)))}: duplicate key"
                )
                continue
            self.lines[(*loc, str(key))] = key_line
            out[key] = self.build(value_node, (*loc, str(key)))
        return out

    def _scalar(self, node: yaml.Node, where: str) -> Any:
        try:
            value = self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError):  # ``!!int abc``, ``!!timestamp 2026-99-99``
            kind = str(node.tag).rpartition(":")[2]
            self.problems.append(f"{where}: not a valid {kind}: {str(node.value)[:60]!r}")
            return None
        if self.env is not None and isinstance(value, str) and "$" in value:
            try:
                return substitute_env(value, self.env, f"{self.path}:{node.start_mark.line + 1}")
            except ConfigError as exc:
                self.problems.extend(exc.problems)
        return value


def load_text(text: str, path: str, *, env: Mapping[str, str] | None = None) -> list[Sourced]:
    """Every document of a YAML text; ``env`` enables ``${VAR}`` substitution."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}{line}: invalid YAML: {problem}"]) from None
    docs = []
    for node in nodes:
        if node is None:
            continue
        builder = _Builder(path, env)
        data = builder.build(node, ())
        if builder.problems:
            raise ConfigError(builder.problems)
        docs.append(Sourced(path, data, builder.lines))
    return docs


def load_file(path: str | Path, *, env: Mapping[str, str] | None = None) -> list[Sourced]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return load_text(text, str(path), env=os.environ if env is None else env)


def validation_problems(exc: ValidationError, source: Sourced, prefix: Loc = ()) -> list[str]:
    """``file:line: key.path: message`` for each error of a pydantic validation."""
    out = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        full = _in_document(source.data, (*prefix, *loc))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        out.append(f"{source.where(full)}: {format_loc(full)}: {message}")
    return out


def _in_document(data: Any, loc: Loc) -> Loc:
    """``loc`` as a path in the document: without the parts pydantic adds that are not
    keys (a tagged union's tag, ``diagnostics.0.promql.querry``), so the error names the
    key and its line, not the line of the item around it."""
    out: list[str | int] = []
    value = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_mapping = isinstance(value, Mapping) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if in_mapping or in_list:
            value = value[part]
        elif not last and isinstance(value, Mapping):
            continue  # not a key of the document: a tag of pydantic's
        else:
            value = None
        out.append(part)
    return tuple(out)


def validate_source(
    model: type[ModelT], source: Sourced, data: Any = None, prefix: Loc = ()
) -> ModelT:
    """Validate ``data`` (default: the whole document) with a model, or raise ConfigError."""
    try:
        return model.model_validate(source.data if data is None else data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, source, prefix)) from None


def require_mapping(source: Sourced) -> Mapping[str, Any]:
    if not isinstance(source.data, Mapping):
        raise ConfigError([f"{source.where(())}: expected a mapping at the top level"])
    return source.data


def require_sequence(source: Sourced, loc: Loc) -> Sequence[Any]:
    value: Any = source.data
    for part in loc:
        value = value[part]
    if not isinstance(value, list):
        raise ConfigError([f"{source.where(loc)}: {format_loc(loc)}: expected a list"])
    return value
