"""Files the package writes: atomically (a temporary name, then a rename, so a partial
result is never visible under its final name and a killed job can simply be rerun), the keyed
row cache of long measurements, and markdown tables."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import IO, Iterator, Sequence


def tmp_name(path: Path) -> Path:
    # host and pid: writers on several machines may share the folder (a Ray cluster on a shared filesystem)
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open ``path``'s temporary twin for writing; rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    kwargs = {} if "b" in mode else {"encoding": encoding}
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _writer_is_alive(temp: Path) -> bool:
    """Whether the temp's writer (``tmp-<host>-<pid>``) is a running process on this host."""
    host, _, pid = temp.name.rpartition(".tmp-")[2].rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def remove_stale_temps(folder: str | Path) -> None:
    """Delete temporary files left by a killed run (never a finished file, nor a live writer's temp:
    runs that share a folder, such as leave-one-out models sharing a teacher cache, start at any time)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for stale in folder.glob(".*.tmp-*"):
        if _writer_is_alive(stale):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def load_row(path: Path, key: dict) -> dict | None:
    """The cached row at ``path`` if it was saved under ``key``, else None.

    The benchmark and the SAE sweep cache ``<folder>/result.json`` = ``{"key": ..., "row": ...}``:
    a rerun of a long measurement recomputes only the rows whose key changed."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    # compared as JSON: a key holding tuples must match its saved lists
    return saved["row"] if saved.get("key") == json.loads(json.dumps(key)) else None


def save_row(path: Path, key: dict, row: dict) -> None:
    with atomic_write(path) as out:
        json.dump({"key": key, "row": row}, out, indent=2)


def fresh_folder(folder: Path, key: dict, force: bool) -> Path:
    """``folder``, emptied when it holds another key's vectors and index (or with ``force``): the
    encoders refuse to mix settings in one folder, and a killed run of the same key resumes."""
    stamp = folder / "key.json"
    if folder.exists() and (force or not stamp.is_file() or json.loads(stamp.read_text(encoding="utf-8")) != key):
        shutil.rmtree(folder)
    if not stamp.is_file():
        write_json(stamp, key)
    return folder


def write_json(path: str | Path, obj: object) -> Path:
    """Atomically write ``obj`` as indented JSON (keys in insertion order) with a final newline."""
    with atomic_write(path) as out:
        json.dump(obj, out, indent=2, ensure_ascii=False)
        out.write("\n")
    return Path(path)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are written with ``str``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
