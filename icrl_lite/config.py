"""Config dataclasses from YAML files and `key=value` overrides, with errors that say how to fix them.

Each field is documented once, by the string literal under it; `field_docs` reads those strings from the
source, so the same text is the `--help` output and the YAML reference (`icrl-lite config`).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import typing
from pathlib import Path
from typing import Any

import yaml

from .data import read_text

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def is_config(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def describe(cls: type, prefix: str = "") -> list[str]:
    """Lines `key (default): doc` for every field, nested sections flattened with dots."""
    lines, docs, instance = [], field_docs(cls), cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if is_config(value):
            lines += describe(type(value), prefix + f.name + ".")
        else:
            lines.append(f"  {prefix}{f.name} (default: {value!r})\n      {docs.get(f.name, '')}")
    return lines


def resolve_config_path(name: str | Path) -> Path:
    path = Path(name)
    if path.exists():
        return path
    packaged = CONFIG_DIR / f"{name}.yaml"
    if packaged.exists():
        return packaged
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {str(name)!r} is neither a file nor a packaged config; packaged configs: {', '.join(names)}")


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """Build `cls` from defaults, then a YAML file, then `key=value` overrides (dotted keys for sections)."""
    config = cls()
    if path is not None:
        source = resolve_config_path(path)
        apply(config, read_config_file(source), where=str(source))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value (e.g. learning_rate=1e-5 or model.lora_rank=8)")
        node: dict = {}
        cursor = node
        *parents, leaf = key.split(".")
        for part in parents:
            cursor = cursor.setdefault(part, {})
        cursor[leaf] = yaml.safe_load(raw) if raw else ""
        apply(config, node, where="command line")
    if hasattr(config, "validate"):
        config.validate()
    return config


def read_config_file(path: Path) -> dict:
    """The mapping of config keys in a YAML file (empty for an empty file); errors name the file."""
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def apply(config, data: dict, where: str, prefix: str = "") -> None:
    """Set fields of `config` from a (nested) mapping, checking names and types."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
            raise ValueError(
                f"{where}: unknown config key {prefix + str(key)!r}.{hint} Run `icrl-lite config` to list every key."
            )
        current = getattr(config, key)
        if is_config(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {prefix}{key} is a section; give a mapping or use {prefix}{key}.<field>=...")
            apply(current, value, where, prefix + key + ".")
        else:
            setattr(config, key, coerce(value, hints[key], f"{where}: {prefix}{key}"))


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a simple type hint; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except ValueError:
                continue
        raise ValueError(f"{where}={value!r}: expected {hint}")
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}={value!r}: expected a list, e.g. [a, b]")
        return [coerce(v, args[0], where) for v in value] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}={value!r}: expected a mapping")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(hint, type) and not isinstance(value, hint) or (hint in (int, float) and isinstance(value, bool)):
        raise ValueError(f"{where}={value!r}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__}")
    return value


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def save_config(config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"name": x}} -> {"model.name": x}."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_keys(path: Path, config, ignore: tuple[str, ...] = ("output_dir", "progress")) -> list[str]:
    """The keys whose value in `config` differs from the config saved at `path`, as "key: old -> new"
    (none when nothing is saved there; `ignore` lists keys that do not change what a run trains)."""
    if not path.exists():
        return []
    try:
        saved = yaml.safe_load(read_text(path))
    except (yaml.YAMLError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        return [f"(the saved {path.name} is unreadable)"]
    saved, current = flatten(saved), flatten(to_dict(config))
    unset = object()
    changes = []
    for key in sorted(saved.keys() | current.keys()):
        old, new = saved.get(key, unset), current.get(key, unset)
        if key not in ignore and old != new:
            changes.append(f"{key}: {'unset' if old is unset else repr(old)} -> {'unset' if new is unset else repr(new)}")
    return changes
