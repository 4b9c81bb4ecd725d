"""Label every latent of a model with the tokens that activate it most, stored with the model.

    python -m splare_pyserini.label_latents --model splare-minilm-scifact --input scifact nfcorpus

Runs the encoder (document side) over a seeded sample of corpus text and records, for each latent,
its top word pieces by peak activation (with firing counts) and a few short contexts; latents that
never fire on the sample are marked dead. Written to ``latent_labels.json`` in the model's folder (a
trained checkpoint's, else the SAE's), or ``--output``. ``python -m splare_pyserini.explain`` and
``SaeSparseEncoder.decode(..., labels=True)`` read it. The vocabulary twin needs no labels: its latent
i is vocabulary token i.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .config import check_fields, option, parse_config, require
from .datasets import read_jsonl, resolve_beir_folder
from .errors import ArtifactError, InputError, cli_main
from .model.settings import VOCABULARY_PROJECTIONS, EncoderSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelConfig:
    input: tuple[str, ...] = option(help="corpus text: BEIR folders or names (their corpus.jsonl) or JSONL files; "
                                         "several are pooled before sampling")
    sample: int = option(4000, "texts drawn (seeded) from the pooled corpora; 0: all")
    seed: int = option(0, "sampling seed")
    batch_size: int = option(16, "texts per forward pass")
    top_tokens: int = option(8, "tokens kept per latent")
    contexts: int = option(2, "example contexts kept per latent")
    window: int = option(6, "word pieces either side of the firing token in a context")
    output: str | None = option(None, "labels file to write (default: latent_labels.json with the model)")
    device: str = option("cpu", "torch device")
    encoder: EncoderSettings = field(default_factory=EncoderSettings)

    def __post_init__(self) -> None:
        check_fields(self)
        require(len(self.input) >= 1, "input: give at least one corpus")
        require(self.sample >= 0, f"sample: must be >= 0, got {self.sample}")
        for name in ("batch_size", "top_tokens", "contexts", "window"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        require(self.encoder.sae not in VOCABULARY_PROJECTIONS,
                f"sae: {self.encoder.sae!r} is a vocabulary; it needs no labels (latent i is token i)")


def read_corpus_texts(spec: str) -> list[str]:
    """Document texts (title + text) of a JSONL file or a BEIR folder/name; queries are never read."""
    path = Path(spec)
    if path.is_file():
        return [r.text for r in read_jsonl(path)]
    folder = resolve_beir_folder(spec)
    corpus = folder / "corpus.jsonl"
    if not corpus.is_file():
        raise InputError(f"--input {spec}: {folder} has no corpus.jsonl")
    return [r.text for r in read_jsonl(corpus)]


def sample_texts(specs: tuple[str, ...] | list[str], n: int, seed: int) -> list[str]:
    """A seeded sample of the pooled corpora, in pool order (so the same call gives the same texts)."""
    pool = [t for spec in specs for t in read_corpus_texts(spec) if t.strip()]
    if n and n < len(pool):
        keep = sorted(random.Random(seed).sample(range(len(pool)), n))
        pool = [pool[i] for i in keep]
    return pool


def label_latents(encoder, texts: list[str], output: str | Path | None = None, batch_size: int = 16,
                  top_tokens: int = 8, contexts: int = 2, window: int = 6, sources: dict | None = None):
    """Label ``encoder``'s latents from ``texts`` and write them; returns the ``LatentLabels``."""
    from .model.labels import collect_labels, default_labels_path, write_labels

    if encoder.settings.sae in VOCABULARY_PROJECTIONS:
        raise InputError(f"sae: {encoder.settings.sae!r} is a vocabulary; it needs no labels (latent i is token i)")
    path = Path(output) if output else default_labels_path(encoder.settings)
    if path is None:
        raise ArtifactError(f"SAE {encoder.settings.sae} has no local folder to store labels in; pass --output")
    started = time.perf_counter()
    with tqdm(total=len(texts), desc="label latents", unit="text", dynamic_ncols=True) as bar:
        labels = collect_labels(encoder, texts, batch_size, top_tokens, contexts, window, bar.update)
    labels.header["sample"].update(sources or {})
    labels.header["seconds"] = round(time.perf_counter() - started, 1)
    write_labels(labels, path)
    log.info("%s: %d of %d latents fired on %d texts (%d tokens) in %.0f s", path, labels.header["alive"],
             len(labels.latents), len(texts), labels.header["sample"]["tokens"], labels.header["seconds"])
    return labels


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(LabelConfig, argv, "python -m splare_pyserini.label_latents", __doc__)
    texts = sample_texts(cfg.input, cfg.sample, cfg.seed)
    if not texts:
        raise InputError(f"--input {' '.join(cfg.input)}: no text")
    from .model.encoder import SaeSparseEncoder

    encoder = SaeSparseEncoder(cfg.encoder, device=cfg.device)
    label_latents(encoder, texts, cfg.output, cfg.batch_size, cfg.top_tokens, cfg.contexts, cfg.window,
                  {"inputs": [Path(s).name for s in cfg.input], "seed": cfg.seed, "requested": cfg.sample})


cli = cli_main(main)

if __name__ == "__main__":
    cli()
