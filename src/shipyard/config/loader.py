"""Load and check ``shipyard.yaml``: YAML with line numbers, ``${ENV}`` references, pydantic
validation, provider options validated by each provider type, and cross-references
(model → provider, target → model). Every problem is reported with its line and a fix."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from shipyard import redact
from shipyard.config.schema import ShipyardConfig
from shipyard.errors import ConfigError

Path_ = tuple[str | int, ...]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
DEFAULT_CONFIG_NAME = "default.yaml"


@dataclass
class LoadedConfig:
    config: ShipyardConfig
    source: str  # file path, or "built-in default"
    provider_options: dict[str, BaseModel] = field(default_factory=dict)


def fmt_path(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


class YamlReader:
    """Builds plain Python data from a YAML node tree, remembering the line of every path.

    Values are kept as written: ``${ENV}`` references are resolved by :func:`substitute_env`, so
    the registry can store (and ``export`` can write back) the reference, never the secret."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.problems: list[str] = []
        self._scalars = yaml.SafeLoader("")

    def where(self, path: Path_) -> str:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        return f"{self.source}:{line}" if line else self.source

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                key = self._scalars.construct_object(knode)
                if not isinstance(key, str):
                    key = str(key)
                kpath = (*path, key)
                if key in out:
                    self.problems.append(
                        f"{self.source}:{knode.start_mark.line + 1}: {fmt_path(kpath)}: duplicate key "
                        f"(first at line {self.lines.get(kpath)}); keep one"
                    )
                self.lines[kpath] = knode.start_mark.line + 1
                out[key] = self.build(vnode, kpath)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, (*path, i)) for i, v in enumerate(node.value)]
        return self._scalars.construct_object(node)


def substitute_env(
    value: Any,
    environ: Mapping[str, str],
    where: Callable[[Path_], str],
    problems: list[str],
    path: Path_ = (),
) -> Any:
    """A copy of ``value`` with every ``${NAME}`` / ``${NAME:-default}`` in strings resolved."""
    if isinstance(value, dict):
        return {k: substitute_env(v, environ, where, problems, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, environ, where, problems, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in environ:
            if redact.SECRET_NAME.search(name):
                redact.register(environ[name])
            return environ[name]
        if default is not None:
            return default
        problems.append(
            f"{where(path)}: {fmt_path(path)}: environment variable `{name}` is not set; "
            f"export it, or write `${{{name}:-default}}` to allow it to be missing"
        )
        return ""

    return _ENV_REF.sub(repl, value)


@dataclass
class Document:
    """A config file as written, with the line of every path in it."""

    source: str
    raw: dict[str, Any]
    reader: YamlReader

    def where(self, path: Path_) -> str:
        return self.reader.where(path)


def read_document(text: str, source: str = "shipyard.yaml") -> Document:
    reader = YamlReader(source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{line}: not valid YAML: {problem}") from None
    data = {} if node is None else reader.build(node, ())
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping with keys like `routes:`")
    if reader.problems:
        raise ConfigError(f"{source} has {len(reader.problems)} problem(s):", list(reader.problems))
    return Document(source, data, reader)


@dataclass
class External:
    """What exists outside the file being checked (the registry), for `apply`: names that
    references may point at, and each prompt's aliases and newest version number."""

    providers: set[str] = field(default_factory=set)
    models: dict[str, str] = field(default_factory=dict)  # name -> kind
    prompts: dict[str, tuple[set[str], int]] = field(default_factory=dict)  # name -> (aliases, newest)


def _hint(err: Mapping[str, Any], model: type[BaseModel] | None) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return f"add `{err['loc'][-1]}:`"
    if kind == "extra_forbidden":
        known = sorted(model.model_fields) if model is not None else []
        return "remove it" + (f"; known keys here: {', '.join(known)}" if known else "")
    return ""


def _model_at(root: type[BaseModel], loc: Path_) -> type[BaseModel] | None:
    """The pydantic model that owns the last element of ``loc`` (for listing known keys)."""
    current: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return None
        ann = fields[part].annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def validation_problems(
    exc: ValidationError, where: Callable[[Path_], str], root: type[BaseModel], prefix: Path_ = ()
) -> list[str]:
    out = []
    for err in exc.errors():
        loc: Path_ = (*prefix, *err["loc"])
        hint = _hint(err, _model_at(root, tuple(err["loc"])))
        msg = err["msg"]
        if err.get("type") == "extra_forbidden":
            msg = f"unknown key `{loc[-1]}`"
        out.append(f"{where(loc)}: {fmt_path(loc)}: {msg}" + (f" ({hint})" if hint else ""))
    return out


def default_config_text() -> str:
    return resources.files("shipyard.config").joinpath(DEFAULT_CONFIG_NAME).read_text("utf-8")


def default_document() -> Document:
    return read_document(default_config_text(), "built-in default config")


def find_config(path: str | Path | None) -> Document | None:
    """The config file to use: ``path``, else ``./shipyard.yaml`` when present, else None."""
    if path is None:
        if not Path("shipyard.yaml").is_file():
            return None
        path = "shipyard.yaml"
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file `{p}` does not exist; check the path given to --config / SHIPYARD_CONFIG"
        )
    return read_document(p.read_text("utf-8"), str(p))


def settings_section(doc: Document | None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file's `settings:` mapping with `${ENV}` references resolved."""
    if doc is None or not doc.raw.get("settings"):
        return {}
    section = doc.raw["settings"]
    if not isinstance(section, dict):
        raise ConfigError(
            f"{doc.where(('settings',))}: `settings:` must be a mapping of setting names to values"
        )
    problems: list[str] = []
    values = substitute_env(
        section, os.environ if environ is None else environ, doc.where, problems, ("settings",)
    )
    if problems:
        raise ConfigError(f"{doc.source} has {len(problems)} problem(s):", problems)
    return dict(values)
