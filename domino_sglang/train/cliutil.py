"""argparse flags generated from a strict pydantic model: one ``--a.b-c`` flag per field
``a.b_c`` (dashes in flags, the field names in JSON config files), with the field's description
and default in ``--help``; ``--config FILE`` (JSON) is read first and flags override it;
``--print-config`` prints the resolved model. Old underscore spellings of the flags are accepted
with a warning by :class:`domino_sglang.cli._common.CliParser`."""

from __future__ import annotations

import argparse
import json
import typing
from pathlib import Path

from pydantic import BaseModel, ValidationError


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _parse_value(text: str, annotation):
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if text.lower() in ("none", "null"):
            return None
        return _parse_value(text, args[0])
    if annotation is bool:
        low = text.lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
        return low in ("true", "1", "yes")
    if origin in (list, tuple):
        inner = args[0] if args else str
        return [_parse_value(x.strip(), inner) for x in text.split(",") if x.strip()]
    if origin is typing.Literal:
        return text
    if annotation in (int, float, str):
        return annotation(text)
    return text


def _walk(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if _is_model(ann):
            yield from _walk(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _metavar(ann) -> str:
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return "{" + ",".join(map(str, typing.get_args(ann))) + "}"
    if origin in (list, tuple):
        return "X,X,..."
    if args and origin is not None:  # Optional[...]
        return _metavar(args[0])
    return {bool: "true|false", int: "INT", float: "FLOAT", str: "STR"}.get(ann, "VALUE")


def _typed(ann):
    def parse(text: str):
        try:
            return _parse_value(text, ann)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {_metavar(ann)}, got {text!r}") from None

    return parse


def flag_name(path: str) -> str:
    """``optim.batch_size`` -> ``--optim.batch-size``."""
    return "--" + path.replace("_", "-")


def _show_default(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel],
                    help_text: dict[str, str] | None = None,
                    metavars: dict[str, str] | None = None) -> None:
    """One flag per field; ``help_text`` / ``metavars`` (keyed by field path) replace the
    field's description / the metavar derived from its type."""
    help_text, metavars = help_text or {}, metavars or {}
    for path, field in _walk(model):
        ann = field.annotation
        desc = help_text.get(path, field.description or "").strip()
        text = desc  # the choices of a Literal field are in its metavar
        if field.is_required():
            text += " (required)"
        elif "default:" not in desc:  # a description may already say what the default means
            text += f" (default: {_show_default(field.get_default())})"
        parser.add_argument(flag_name(path), dest=f"f__{path}",
                            metavar=metavars.get(path, _metavar(ann)),
                            type=_typed(ann), default=argparse.SUPPRESS,
                            help=text.strip())


def resolve(model: type[BaseModel], ns: argparse.Namespace, config_file: str | None):
    data: dict = {}
    if config_file:
        data = json.loads(Path(config_file).read_text())
    for key, value in vars(ns).items():
        if not key.startswith("f__"):
            continue
        node = data
        parts = key[3:].split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return model.model_validate(data)


def explain(exc: ValidationError) -> str:
    """One line: each bad field as its flag, the value given, and pydantic's reason."""
    parts = []
    for e in exc.errors():
        path = ".".join(map(str, e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            parts.append(f"{flag_name(path)}: required")
        elif e["type"] == "extra_forbidden":
            parts.append(f"config field {path}: unknown (a typo?)")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f"={value}"
            parts.append(f"{flag_name(path)}{shown} (config field {path}): {msg}")
    return "; ".join(parts)
