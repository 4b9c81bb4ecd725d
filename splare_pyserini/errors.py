"""User-facing errors: one line, no traceback, exit code 2 (``SPLARE_DEBUG=1`` shows the traceback)."""
from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """A problem with the user's input or artifacts, explained in one line."""


class InputError(UserError):
    """Bad input data or a bad setting; the message names the file, line or field."""


class ArtifactError(UserError):
    """A model, SAE, vector set or index that is missing, corrupt or mismatched."""


def setup_logging() -> None:
    """Progress and info lines go to stderr through ``logging`` (level from ``SPLARE_LOG``, default INFO)."""
    level = os.environ.get("SPLARE_LOG", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format="%(message)s", stream=sys.stderr)


def cli_main(func: F | None = None, *, resumable: bool = False):
    """Wrap a CLI ``main``: logging set up; user errors print one line and exit 2; an interrupt
    exits 130 and, for commands that resume, says that rerunning resumes."""

    def decorate(main: F) -> F:
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            setup_logging()
            try:
                return main(*args, **kwargs)
            except UserError as err:
                if os.environ.get("SPLARE_DEBUG") == "1":
                    traceback.print_exc()
                print(f"error: {err}", file=sys.stderr)
                raise SystemExit(2) from None
            except KeyboardInterrupt:
                print("interrupted" + ("; rerun the same command to resume" if resumable else ""), file=sys.stderr)
                raise SystemExit(130) from None

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate
