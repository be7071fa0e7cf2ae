"""YAML configuration validated by pydantic, with `CHURNGUARD_*` environment overrides.

Every config file maps to one pydantic model. A wrong key or value fails with a `ConfigError`
that names the file, the dotted key, what was expected and what was given.

Environment overrides use a double underscore for nesting, after a prefix named for the file:
`CHURNGUARD_TRAINING__SEARCH__TRIALS=5` sets `search.trials` in `configs/training.yaml`.
Values are parsed as YAML, so `5`, `0.3`, `true` and `[1, 2]` get their natural types.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from churnguard.settings import config_dir

Model = TypeVar("Model", bound=BaseModel)


class UsageError(ValueError):
    """A problem with what the user gave (config, data, model, request) that the message explains.

    The command line prints these without a traceback and exits 2; every other error is a bug.
    """


class ConfigError(UsageError):
    """A configuration file or override that cannot be used; the message says where and why."""


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def env_overrides(prefix: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Nested dict of overrides from variables named `{prefix}__a__b=value`."""
    environ = dict(os.environ) if environ is None else environ
    head = f"{prefix}__"
    overrides: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(head):
            continue
        keys = [part.lower() for part in name[len(head) :].split("__") if part]
        if not keys:
            continue
        node = overrides
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return overrides


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str] | None:
    """The field names allowed at `loc`, walking nested models, so an unknown key can list the right ones."""
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return None
        annotation = fields[part].annotation
        candidates = [a for a in (*typing.get_args(annotation), annotation) if isinstance(a, type)]
        model = next((a for a in candidates if issubclass(a, BaseModel)), None)
        if model is None:
            # dict[str, Model] values
            args = [
                a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
            ]
            model = args[0] if args else None
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else None


def format_validation_error(
    source: str, exc: ValidationError, model: Any = None, tags: frozenset = frozenset()
) -> str:
    lines = [f"{source}: invalid configuration"]
    for error in exc.errors():
        # Drop discriminator tags (e.g. `snapshot`) from the location: they are not keys in the file.
        loc = tuple(part for part in error["loc"] if part not in tags)
        key = ".".join(str(part) for part in loc) or "(top level)"
        if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            key = ".".join(
                [*map(str, loc), str(error.get("ctx", {}).get("discriminator", "kind")).strip("'")]
            )
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1]) if model is not None else None
            expected = f"one of: {', '.join(allowed)}" if allowed else "a known key; check the spelling"
            lines.append(f"  key '{key}': unknown key, expected {expected}")
            continue
        given = error.get("input")
        given_text = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  key '{key}': {error['msg']}{given_text}")
    return "\n".join(lines)


def validate(model: type[Model], data: dict[str, Any], source: str, tags: frozenset = frozenset()) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, model, tags)) from None


def env_prefix_for(path: Path) -> str:
    """`configs/training.yaml` -> `CHURNGUARD_TRAINING`; `datasets/crm.yaml` -> `CHURNGUARD_DATASET_CRM`."""
    stem = path.stem.upper().replace("-", "_")
    if path.parent.name == "datasets":
        return f"CHURNGUARD_DATASET_{stem}"
    return f"CHURNGUARD_{stem}"


def load_file(model: type[Model], path: Path, environ: dict[str, str] | None = None) -> Model:
    """Read one YAML file, apply its environment overrides and validate it."""
    data = deep_merge(read_yaml(path), env_overrides(env_prefix_for(path), environ))
    return validate(model, data, str(path))


def load_named(model: type[Model], name: str, environ: dict[str, str] | None = None) -> Model:
    """Load `configs/<name>.yaml` (for example `training`, `scoring`, `monitoring`, `service`)."""
    return load_file(model, config_dir() / f"{name}.yaml", environ)
