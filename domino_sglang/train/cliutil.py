"""argparse flags generated from a strict pydantic model: one ``--a.b`` flag per field, with the
field's description and default in ``--help``; ``--config FILE`` (JSON) is read first and flags
override it; ``--print-config`` prints the resolved model."""

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


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    for path, field in _walk(model):
        ann = field.annotation
        default = "required" if field.is_required() else repr(field.get_default())
        kind = _metavar(ann)
        lits = typing.get_args(ann) if typing.get_origin(ann) is typing.Literal else None
        desc = field.description or ""
        choices = f" choices: {', '.join(map(str, lits))}." if lits else ""
        parser.add_argument(f"--{path}", dest=f"f__{path}", metavar=kind,
                            type=lambda s, a=ann: _parse_value(s, a), default=argparse.SUPPRESS,
                            help=f"{desc}{'. ' if desc else ''}{choices} (default: {default})")


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
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
