"""Typed config blocks: the one source of every experiment's keys, types, defaults and documentation.

Each block of a Sacred config tree is a dataclass whose fields are the block's keys::

    @dataclass
    class Optimizer(Block):
        crnn_lr: float = key(0.001, "learning rate of the CRNN", min=0)
        betas: tuple[float, float] = key((0.9, 0.999), "Adam betas", min=0, max=1)

From the root dataclass of an experiment everything else is derived: the Sacred default tree (:func:`tree`),
key and value validation (:func:`problems`: unknown keys with the known ones of their block, wrong types,
out-of-range values, all at once) and the key table of docs/CONFIG.md (:func:`key_rows`). Code that runs on a
resolved config reads ``config[...]`` and never restates a default.

Types the checker understands: ``bool`` (also 0 / 1, as the reference's commands write ``no_wrapper=1``),
``int`` (not bool), ``float`` (an int is fine), ``str``, ``None``, ``X | Y``, ``Literal[...]``, ``tuple[X, ...]``,
``tuple[X, Y]`` and ``list[X]`` (a list or a tuple: Sacred's command line gives either), ``dict``, ``Any`` and
nested blocks. Ranges: ``min`` / ``max`` (inclusive) and ``gt`` (exclusive) apply to every number in the value,
``length`` to sequences.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import types
import typing
from typing import Any, Callable, ClassVar, Iterator, Literal, Mapping

__all__ = ["Block", "key", "block", "tree", "problems", "key_rows", "leaf_paths", "without_keys"]


class Block:
    """Base of every config block. ``open_keys``: a predicate for keys accepted beyond the fields (``trainer``
    takes every ``pytorch_lightning.Trainer`` argument); their values are checked by whoever consumes them."""

    open_keys: ClassVar[Callable[[str], bool] | None] = None
    open_keys_doc: ClassVar[str] = ""


def key(default: Any, doc: str = "", *, min: float | None = None, max: float | None = None,
        gt: float | None = None, length: int | None = None) -> Any:
    """A config key: its default, one line of documentation, and the range of its numbers / length."""
    metadata = {"doc": doc, "min": min, "max": max, "gt": gt, "length": length}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def block(cls: type, doc: str = "") -> Any:
    """A nested block (its defaults are the block class's)."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


def without_keys(cls: type, *names: str) -> type:
    """A copy of the block class ``cls`` without the keys ``names`` (same name, types, defaults and docs), for an
    experiment that takes those keys elsewhere (``ex_downstream``'s top-level ``pretrained_name``)."""
    hints = _hints(cls)
    unknown = set(names) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no keys {sorted(unknown)}")
    fields = []
    for f in dataclasses.fields(cls):
        if f.name in names:
            continue
        if f.default is not dataclasses.MISSING:
            copied = dataclasses.field(default=f.default, metadata=f.metadata)
        else:
            copied = dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
        fields.append((f.name, hints[f.name], copied))
    return dataclasses.make_dataclass(cls.__name__, fields, bases=(Block,))


# ------------------------------------------------------------------------------------------------ tree
def tree(instance: Any) -> dict:
    """The Sacred config tree (plain dicts, lists and tuples) of a block instance."""
    return {f.name: (tree(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value))
            for f in dataclasses.fields(instance) for value in (getattr(instance, f.name),)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=False)


def _is_block(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Block)


# ------------------------------------------------------------------------------------------------ values
def _union_args(annotation: Any) -> tuple | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return None


def _matches(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    union = _union_args(annotation)
    if union is not None:
        return any(_matches(value, arg) for arg in union)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(annotation))
    if annotation is bool:
        return isinstance(value, bool) or (type(value) is int and value in (0, 1))
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is dict or origin is dict:
        return isinstance(value, Mapping)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(_matches(v, item) for v in value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    raise TypeError(f"config schema: unsupported annotation {annotation!r}")


def _describe(annotation: Any) -> str:
    if annotation is Any:
        return "anything"
    if annotation is None or annotation is type(None):
        return "None"
    union = _union_args(annotation)
    if union is not None:
        return " or ".join(_describe(arg) for arg in union)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(annotation))
    simple = {bool: "True or False", int: "an integer", float: "a number", str: "a string", dict: "a dict"}
    if annotation in simple:
        return simple[annotation]
    if origin is dict:
        return "a dict"
    if origin in (tuple, list):
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a tuple of {len(args)} ({', '.join(_describe(a) for a in args)})"
        item = _describe(args[0]) if args else "values"
        return f"a list of {item.removeprefix('an ').removeprefix('a ')}s" if item[:2] in ("a ", "an") else \
            f"a list of ({item})"
    return getattr(annotation, "__name__", str(annotation))


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, numbers.Real):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _numbers(item)


def _range_text(meta: Mapping) -> str:
    parts = []
    if meta.get("gt") is not None:
        parts.append(f"> {meta['gt']}")
    if meta.get("min") is not None:
        parts.append(f">= {meta['min']}")
    if meta.get("max") is not None:
        parts.append(f"<= {meta['max']}")
    return " and ".join(parts)


def value_problem(path: str, value: Any, annotation: Any, meta: Mapping) -> str | None:
    """Why ``value`` is not valid for the key ``path`` (None when it is)."""
    expected = _describe(annotation)
    length = meta.get("length")
    if length is not None:
        expected += f" with {length} values"
    rng = _range_text(meta)
    if rng:
        expected += f" (each {rng})" if typing.get_origin(annotation) in (tuple, list) else f" ({rng})"
    if not _matches(value, annotation):
        return f"{path}={value!r} must be {expected}"
    if length is not None and isinstance(value, (list, tuple)) and len(value) != length:
        doc = meta.get("doc")
        return f"{path} needs {length} values{f' {doc}' if doc else ''}, got {len(value)}: {value!r}"
    for number in _numbers(value):
        if (isinstance(number, float) and math.isnan(number)) \
                or (meta.get("gt") is not None and not number > meta["gt"]) \
                or (meta.get("min") is not None and number < meta["min"]) \
                or (meta.get("max") is not None and number > meta["max"]):
            return f"{path}={value!r} must be {expected}"
    return None


# ------------------------------------------------------------------------------------------------ validation
def _leaves(path: str, value: Any) -> list[str]:
    """``foo.bar=2`` arrives as ``{"foo": {"bar": 2}}``: name the key the user typed."""
    if isinstance(value, Mapping) and value:
        return [leaf for name, item in value.items() for leaf in _leaves(f"{path}.{name}", item)]
    return [path]


def problems(config: Mapping, schema: type, prefix: str = "") -> list[str]:
    """Every unknown key and every invalid value of ``config`` against the block class ``schema``."""
    hints = _hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    found = []
    for name, value in config.items():
        path = f"{prefix}{name}"
        if name not in fields:
            if schema.open_keys is not None and schema.open_keys(name):
                continue
            known = ", ".join(sorted(fields))
            where = f" (known keys of {prefix[:-1]!r}: {known})" if prefix else ""
            found.extend(f"unknown config key {leaf!r}{where}" for leaf in _leaves(path, value))
            continue
        annotation = hints[name]
        if _is_block(annotation):
            if isinstance(value, Mapping):
                found.extend(problems(value, annotation, path + "."))
            else:
                found.append(f"{path}={value!r} must be a block of keys (e.g. {path}.<key>=<value>)")
            continue
        problem = value_problem(path, value, annotation, fields[name].metadata)
        if problem:
            found.append(problem)
    return found


# ------------------------------------------------------------------------------------------------ docs
def leaf_paths(schema: type, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field, Any]]:
    """(dotted key, annotation, field, default) of every leaf key of ``schema``, in declaration order."""
    hints = _hints(schema)
    instance = schema()
    for f in dataclasses.fields(schema):
        annotation = hints[f.name]
        if _is_block(annotation):
            yield from leaf_paths(annotation, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", annotation, f, getattr(instance, f.name)


def type_name(annotation: Any) -> str:
    """Short type text for docs (``int``, ``float | None``, ``tuple[float, ...]``)."""
    text = str(annotation) if not isinstance(annotation, type) else annotation.__name__
    return text.replace("typing.", "").replace("NoneType", "None")


def key_rows(schemas: Mapping[str, type]) -> list[tuple[str, str, dict[str, Any], str]]:
    """(key, type, {schema name: default or absent}, doc) for every key of several experiment schemas."""
    rows: dict[str, list] = {}
    for name, schema in schemas.items():
        for path, annotation, f, default in leaf_paths(schema):
            row = rows.setdefault(path, [path, type_name(annotation), {}, f.metadata.get("doc", "")])
            row[2][name] = default
            rng = _range_text(f.metadata)
            if rng and rng not in row[3]:
                row[3] = f"{row[3]} ({rng})".strip()
    return [tuple(row) for row in rows.values()]
