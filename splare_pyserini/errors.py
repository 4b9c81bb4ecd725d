"""User-facing errors: one line, no traceback, non-zero exit."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """A problem with the user's input or artifacts, explained in one line."""


class InputError(UserError):
    """Bad input data; the message names the file, line or field."""


class ArtifactError(UserError):
    """A model, SAE, vector set or index that is missing, corrupt or mismatched."""


def cli_main(func: F) -> F:
    """Wrap a CLI ``main`` so that user errors print one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted; rerun the same command to resume", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
