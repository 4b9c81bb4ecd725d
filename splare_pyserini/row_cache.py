"""One measured row per folder, reused only while the settings it was measured under are the same.

The benchmark and the SAE sweep both cache ``<folder>/result.json`` = ``{"key": ..., "row": ...}``:
a rerun of a long measurement recomputes only the rows whose key changed."""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import atomic_write


def load_row(path: Path, key: dict) -> dict | None:
    """The cached row at ``path`` if it was saved under ``key``, else None."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return saved["row"] if saved.get("key") == key else None


def save_row(path: Path, key: dict, row: dict) -> None:
    with atomic_write(path) as out:
        json.dump({"key": key, "row": row}, out, indent=2)
