"""One idiom for every command: a dataclass is the command's config, its CLI is generated from it.

As SAELens builds its runner's flags from ``LanguageModelSAERunnerConfig``: each field becomes
``--field-name`` with the field's type, default and help (``option(...)`` metadata); a field whose
type is itself a config dataclass (e.g. ``encoder: EncoderSettings``) contributes its own flags as
an argument group. Values are validated by the dataclasses' ``__post_init__`` (before any model
loads), so the Python API and the CLI refuse the same things with the same one-line messages.

    cfg = parse_config(EncodeConfig, argv, prog="python -m splare_pyserini.encode", doc=__doc__)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from typing import Any, Sequence, TypeVar

from .errors import InputError

C = TypeVar("C")
_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, choices: Sequence[Any] | None = None,
           flag: str | None = None, metavar: str | None = None, default_factory: Any = _MISSING,
           cli: bool = True, positional: bool = False) -> Any:
    """A config field with its CLI help; ``choices`` are checked by :func:`check_fields`;
    ``positional``: an argument without a flag (``models fetch NAME...``)."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "flag": flag,
                "metavar": metavar, "cli": cli, "positional": positional}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_fields(config: object) -> None:
    """Refuse a value outside a field's ``choices``. Every config, nested ones included, calls it in its
    ``__post_init__``, so a bad choice stops before any model loads; counts and ranges are each config's own
    ``require`` checks."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise InputError(f"{f.name}: {value!r} is not one of {', '.join(map(str, choices))}")
    device = getattr(config, "device", None)
    if isinstance(device, str):  # the GPUs of a Ray cluster are the workers', not this machine's
        check_device(device, available=getattr(getattr(config, "distributed", None), "ray", None) is None)


def check_device(device: str, available: bool = True) -> None:
    """A torch device name (and, with ``available``, one this machine has): a misspelt ``cdua`` or a GPU
    that is not there is a one-line error before any model loads, not a CUDA traceback mid-run."""
    if device == "cpu":
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"device: {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from err
    if not available:
        return
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        require(count > 0, f"device: {device!r}, but torch sees no CUDA GPU on this machine")
        require(parsed.index is None or parsed.index < count,
                f"device: {device!r}, but this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    elif parsed.type == "mps":
        require(torch.backends.mps.is_available(), f"device: {device!r}, but torch has no MPS backend here")


def require(condition: bool, message: str) -> None:
    """``__post_init__`` helper: a failed check is a one-line user error."""
    if not condition:
        raise InputError(message)


def _unwrap(kind: Any) -> tuple[Any, bool]:
    """(type without None, whether None is allowed)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return kind, False


def _none_or(kind: Any):
    """An optional field's flag type: ``none`` is None, anything else is parsed as ``kind``."""
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = getattr(kind, "__name__", "value")  # what argparse names in its error messages
    return parse


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr and exit code 2, like every user error."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None,
                         taken: set[str] | None = None) -> None:
    """Add one flag per field of ``cls`` (recursing into nested config dataclasses)."""
    taken = set() if taken is None else taken
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title) if title else parser
    for f in dataclasses.fields(cls):
        if not f.init or not f.metadata.get("cli", True):
            continue
        kind, optional = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(kind):
            add_config_arguments(parser, kind, f.name, taken)
            continue
        if f.name in taken:
            raise TypeError(f"{cls.__name__}.{f.name}: flag defined twice")
        taken.add(f.name)
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else None)
        text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            text += f" (one of: {', '.join(map(str, choices))})"
        kwargs: dict[str, Any] = {"dest": f.name, "metavar": f.metadata.get("metavar")}
        if optional and default is not None:
            text += " ('none' to turn off)"
        if kind is bool:
            kwargs = {"dest": f.name, "action": argparse.BooleanOptionalAction, "default": default}
        else:
            origin = typing.get_origin(kind)
            if origin in (tuple, list):
                args = [a for a in typing.get_args(kind) if a is not Ellipsis]
                fixed = origin is tuple and Ellipsis not in typing.get_args(kind)
                kwargs.update(type=args[0] if args else str, nargs=len(args) if fixed else "*")
            else:
                # a field whose choices name "none" (e.g. saturation) takes it as that choice, not as unset
                none_is_choice = bool(choices) and "none" in choices
                kwargs["type"] = _none_or(kind) if optional and not none_is_choice else kind
            kwargs["default"] = default
            if not has_default:
                kwargs["required"] = True
        if has_default and default is not None and kind is not bool:
            text += " (default: %(default)s)"
        name = _flag(f)
        if f.metadata.get("positional"):  # argparse names a positional by its dest and never calls it required
            name = kwargs.pop("dest")
            kwargs.pop("required", None)
            kwargs.setdefault("nargs", "?" if has_default else None)
        group.add_argument(name, help=text or None, **{k: v for k, v in kwargs.items() if v is not None
                                                       or k == "default"})


def config_from_namespace(cls: type[C], values: dict[str, Any]) -> C:
    """Rebuild ``cls`` (and its nested configs) from parsed flags; runs ``__post_init__`` checks."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind, _ = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = config_from_namespace(kind, values)
        elif f.name in values:
            value = values[f.name]
            if isinstance(value, list) and typing.get_origin(kind) is tuple:
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)


def config_to_argv(config: object) -> list[str]:
    """The command line that :func:`parse_config` turns back into ``config`` (to run a command in a child)."""
    positionals: list[str] = []  # first, so no flag's values run into them
    argv: list[str] = []
    for f in dataclasses.fields(config):
        if not f.init or not f.metadata.get("cli", True):
            continue
        value = getattr(config, f.name)
        if f.metadata.get("positional"):
            positionals += list(map(str, value)) if isinstance(value, (tuple, list)) else [str(value)]
        elif dataclasses.is_dataclass(value):
            argv += config_to_argv(value)
        elif isinstance(value, bool):
            argv.append(_flag(f) if value else "--no-" + _flag(f)[2:])
        elif isinstance(value, (tuple, list)):
            argv += [_flag(f), *map(str, value)]
        elif value is None and "none" in (f.metadata.get("choices") or ()):
            # "none" is one of this field's values, so unset is said by leaving the flag out (its default)
            if f.default is not None:
                raise TypeError(f"{type(config).__name__}.{f.name}: unset cannot be said on a command line")
        else:
            argv += [_flag(f), "none" if value is None else str(value)]
    return positionals + argv


def build_parser(cls: type, prog: str, doc: str | None = None) -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, cls)
    return parser


def parse_config(cls: type[C], argv: Sequence[str] | None, prog: str, doc: str | None = None) -> C:
    """The config a command line describes, validated."""
    args = build_parser(cls, prog, doc).parse_args(argv)
    return config_from_namespace(cls, vars(args))
