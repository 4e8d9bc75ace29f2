"""The base of every typed config: strict validation, file + ``key=value`` loading, content hash.

Every config is a frozen pydantic model validated in strict JSON mode: unknown keys, wrong
types (``"3"`` for an int, ``2.5`` for an int) and out-of-range values are errors that name
the key. A config loads from a YAML/JSON file and from ``key=value`` overrides (dotted keys
reach into nested configs: ``density_ratio.hidden_units=64``), and has a stable content
hash that the artifact store uses as its directory name.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import types
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal, Mapping, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the offending key."""


class Config(BaseModel):
    """Base of every stage config: strict, frozen, hashable by content."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    STAGE: ClassVar[str] = "config"
    MOVED_KEYS: ClassVar[dict[str, str]] = {}   # key this config refuses: what to set instead
    # The stage's implementation version: bump it whenever the stage's output for the same
    # values changes, so an artifact made by older code is never reused under the same key.
    # Version 1 is left out of the hash, so the keys made before versions existed hold.
    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        """16 hex chars of sha256 over the stage name, its ``VERSION`` (from 2 on) and the
        canonical JSON of the values."""
        payload = {"stage": self.STAGE, "config": self.to_dict()}
        if self.VERSION != 1:
            payload["version"] = self.VERSION
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping of keys, got {type(data).__name__}")
        try:
            return cls.model_validate_json(json.dumps(dict(data), allow_nan=True))
        except ValidationError as err:
            raise ConfigError(_explain(cls, err)) from None

    @classmethod
    def load(cls: type[C], path: str | Path | None = None, overrides: Iterable[str] = (),
             base: Mapping[str, Any] | None = None) -> C:
        """Read a YAML/JSON file (or start from defaults) and apply ``key=value`` overrides.

        ``base``: a mapping (a preset) that the file's keys are merged into, nested keys
        one by one.
        """
        data = merge(base or {}, read_mapping(path) if path is not None else {})
        for item in overrides:
            key, value = parse_override(item)
            _set_dotted(data, key, value)
        return cls.from_dict(data)

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some keys changed (``model_copy`` would skip validation)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def read_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s keys put in; nested mappings are merged key by key. A ``null`` in
    ``top`` over a nested mapping removes it, so its default applies: ``generators: {vae: null}``
    drops a preset's generator."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        elif value is None and isinstance(out.get(key), Mapping):
            del out[key]
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=0.5"`` -> ``("a.b", 0.5)``; the value is parsed as YAML (``true``, ``null``, ``[1,2]``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a nested config")
        node = child
    last = parts[-1]
    if value is None and isinstance(node.get(last), Mapping):
        del node[last]  # null over a nested config removes it (as in merge)
    else:
        node[last] = value


def _explain(cls: type[Config], err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(_unknown_key(cls, e["loc"]))
        elif e["type"] == "value_error" and isinstance(e.get("input"), Mapping):  # a whole-config check
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}" if e["loc"] else msg)
        else:
            lines.append(f"key {key!r}: {e['msg']} (got {e.get('input')!r})")
    return f"{cls.__name__}: " + "; ".join(lines)


def _unknown_key(cls: type[Config], loc: tuple) -> str:
    """What an unknown key at ``loc`` should have been: a moved key's new place, a near name,
    the same name one level down (``generator.kind`` is ``generator.model.kind``, with its
    choices), and the keys its config knows."""
    model, path = _model_at(cls, loc[:-1])
    name = str(loc[-1])
    key = ".".join([*path, name])
    known = list(model.model_fields) if model is not None else []
    moved_keys = getattr(model, "MOVED_KEYS", {})
    if name in moved_keys:
        return f"key {key!r} {moved_keys[name]}"
    near = difflib.get_close_matches(name, [*known, *moved_keys], n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    if not near and model is not None:
        deeper, choices = _one_level_down(model, name)
        if deeper:
            more = f" one of {', '.join(choices)}" if choices else ""
            hint = f" (did you mean {'.'.join([*path, deeper])!r}?{more})"
    return f"unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}"


def _configs(annotation: Any) -> list[type[BaseModel]]:
    """The config classes a field holds: itself, or the members of a union (``X | None``, the
    generator's ``model``)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _configs(a)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _model_at(cls: type[BaseModel], loc: tuple) -> tuple[type[BaseModel] | None, list[str]]:
    """(the nested config class at ``loc``, an error's key path inside ``cls``, or None if there
    is none; the path as a user writes it). A mapping of configs (``generators: {name: ...}``)
    takes one part of the path, its key; in a union of configs (``model``) pydantic's path names
    the member by its tag (``model.vae.latent_dim``), which is followed and left out."""
    model: Any = cls
    path, parts = [], [str(p) for p in loc]
    while parts:
        path.append(parts.pop(0))
        field = model.model_fields.get(path[-1])
        if field is None:
            return None, path + parts
        annotation = field.annotation
        options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
        mapping = [a for a in options if get_origin(a) is dict]
        if mapping and parts:
            path.append(parts.pop(0))                              # the mapping's key, e.g. a generator's name
            annotation = get_args(mapping[0])[1]
        members = _configs(annotation)
        tags = {m.model_fields[field.discriminator].default: m for m in members
                if isinstance(field.discriminator, str) and field.discriminator in m.model_fields}
        if parts and parts[0] in tags:
            model = tags[parts.pop(0)]
        elif len(members) == 1:
            model = members[0]
        else:
            return None, path + parts
    return model, path


def _one_level_down(model: type[BaseModel], name: str) -> tuple[str | None, list[str]]:
    """(``"model.kind"``, its choices ``["baseline", "vae", "pixelcnnpp"]``, empty unless it takes
    a fixed set) when ``name`` is a key of a config one level below ``model``; else (None, [])."""
    for field_name, field in model.model_fields.items():
        holders = [m for m in _configs(field.annotation) if name in m.model_fields]
        if holders:
            choices = [str(v) for m in holders for v in get_args(m.model_fields[name].annotation)
                       if get_origin(m.model_fields[name].annotation) is Literal]
            return f"{field_name}.{name}", choices
    return None, []
