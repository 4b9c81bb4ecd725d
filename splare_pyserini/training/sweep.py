"""Pick an SAE's layer, width (d_sae) and k by measurement.

Trains small TopK SAEs one factor at a time around a base configuration (every layer in
``--layers`` at the base width and k, every width in ``--d-sae`` at the base layer and k, ...)
on the same token budget, and scores each by what it is for here: retrieval with its latents
as the vocabulary, *before* any retrieval training (the untrained SPLARE encoder), on a slice
of the set's **train** split (so test queries never choose the SAE), next to explained
variance and the fraction of latents alive. The base is the shipped SAE's configuration.

    python -m splare_pyserini.sae_sweep --dataset scifact --output runs/sae-sweep --layers 2 3 4 5 6

Each point is cached in ``<output>/<point>/result.json`` (keyed on the settings that shape it; one
output folder per dataset); writes ``sweep.json`` and ``sweep.md``.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..config import check_fields, option, parse_config, require
from ..datasets import load_beir, resolve_beir_folder, write_beir_slice
from ..errors import cli_main
from ..io import atomic_write, load_row, markdown_table, save_row, write_json
from ..model.artifacts import BASE_MODEL
from ..model.settings import ATTENTIONS, DEFAULT_D_SAE, DEFAULT_K, DEFAULT_LAYER

__all__ = ["SweepPoint", "SweepConfig", "sweep_points", "sample_activations", "retrieval_slice", "run_point",
           "run_sweep", "markdown", "COLUMNS"]
log = logging.getLogger(__name__)
# The settings every point shares and its result depends on: with the point, the key of its cached row.
SHARED_SETTINGS = ("model", "steps", "batch_size", "lr", "max_tokens", "max_length", "n_queries", "n_docs", "seed")


@dataclass(frozen=True)
class SweepPoint:
    layer: int
    d_sae: int
    k: int

    @property
    def name(self) -> str:
        return f"L{self.layer}-d{self.d_sae}-k{self.k}"


@dataclass(frozen=True)
class SweepConfig:
    dataset: str = option("scifact", "BEIR folder or name")
    output: str = option("runs/sae-sweep", "folder for the points' SAEs, runs and the sweep report")
    model: str = option(BASE_MODEL, "backbone the SAEs are trained on")
    base: tuple[int, int, int] = option((DEFAULT_LAYER, DEFAULT_D_SAE, DEFAULT_K),
                                        "the point every variation starts from",
                                        metavar=("LAYER", "D_SAE", "K"))
    layers: tuple[int, ...] = option((), "layers to try at the base width and k")
    d_sae: tuple[int, ...] = option((), "widths to try at the base layer and k")
    k: tuple[int, ...] = option((), "k values to try at the base layer and width")
    attention: str | None = option(None, "a decoder's attention (causal or bidirectional; default: the model's own)",
                                   choices=ATTENTIONS)
    b_dec_init: str = option("auto", "the SAEs' decoder bias at the start: zeros; mean, the mean state; auto, "
                                     "train_sae's rule (the mean where the states carry a large constant offset: "
                                     "e5's final layer, LLM residual streams), resolved per layer",
                             choices=("auto", "zeros", "mean"))
    steps: int = option(60, "SAE training steps per point")
    batch_size: int = option(4096, "token states per SAE step")
    lr: float = option(4e-4, "SAE learning rate")
    max_tokens: int = option(300_000, "token states per layer, from a seeded random sample of the texts")
    max_length: int = option(256, "tokens kept per text (training and retrieval)")
    n_queries: int = option(100, "queries of the retrieval slice")
    n_docs: int = option(1000, "documents of the retrieval slice")
    seed: int = option(0, "seed of sampling, slicing and SAE training")

    def __post_init__(self) -> None:
        check_fields(self)
        require(len(self.base) == 3 and min(self.base) >= 1, f"base: LAYER D_SAE K must be positive, got {self.base}")
        for name in ("layers", "d_sae", "k"):
            require(all(v >= 1 for v in getattr(self, name)), f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("steps", "batch_size", "max_tokens", "max_length", "n_queries", "n_docs"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        require(self.lr > 0, f"lr: must be > 0, got {self.lr}")

    def points(self) -> list["SweepPoint"]:
        return sweep_points(SweepPoint(*self.base), self.layers, self.d_sae, self.k)

    def shared(self) -> dict:
        shared = {name: getattr(self, name) for name in SHARED_SETTINGS}
        if self.attention:  # settings added later join the key only when set, so older rows stay valid
            shared["attention"] = self.attention
        if self.b_dec_init != "zeros":  # rows cached when zeros was the default keep their keys
            shared["b_dec_init"] = self.b_dec_init
        return shared


def sweep_points(base: SweepPoint, layers: Sequence[int] = (), widths: Sequence[int] = (),
                 ks: Sequence[int] = ()) -> list[SweepPoint]:
    """The base point, then one-factor variations, without repeats."""
    points = [base]
    points += [SweepPoint(layer, base.d_sae, base.k) for layer in layers]
    points += [SweepPoint(base.layer, width, base.k) for width in widths]
    points += [SweepPoint(base.layer, base.d_sae, k) for k in ks]
    return list(dict.fromkeys(points))


def sample_activations(dataset: Path, cfg: SweepConfig, layer: int) -> torch.Tensor:
    """Hidden states at ``layer`` of a seeded random sample of the set's documents and queries,
    ``max_tokens`` of them (a length-sorted prefix would only see the longest texts)."""
    from ..model.backbone import TextBatcher, load_backbone
    from ..datasets import training_texts
    from ..model.backbone import collect_activations

    texts = training_texts(str(dataset))
    random.Random(cfg.seed).shuffle(texts)
    tokenizer, backbone = load_backbone(cfg.model, layer, attention=cfg.attention)
    batcher = TextBatcher.for_backbone(tokenizer, backbone)
    total, chosen = 0, []
    for text, length in zip(texts, batcher.lengths(texts, cfg.max_length)):
        chosen.append(text)
        total += max(0, length - 2)  # special tokens are masked out
        if total >= cfg.max_tokens:
            break
    return collect_activations(batcher, backbone, chosen, cfg.max_length, max_tokens=cfg.max_tokens)


def retrieval_slice(dataset: Path, output: Path, cfg: SweepConfig) -> tuple[Path, str]:
    """The slice of the train split (the test split if there is none) the points are scored on."""
    split = "train" if (dataset / "qrels" / "train.tsv").is_file() else "test"
    folder = output / f"slice-{split}"
    if not (folder / "corpus.jsonl").is_file():
        write_beir_slice(dataset, folder, n_queries=cfg.n_queries, n_docs=cfg.n_docs, split=split, seed=cfg.seed)
    return folder, split


def run_point(point: SweepPoint, acts: torch.Tensor, dataset: Path, folder: Path, split: str, cfg: SweepConfig,
              output: Path) -> dict:
    """Train the point's SAE and score the untrained SPLARE encoder over it on the slice."""
    from ..model.encoder import SaeSparseEncoder
    from ..model.settings import EncoderSettings
    from ..pipeline import RunSettings, run_sparse_system
    from .sae import TrainSaeConfig, train_sae

    started = time.time()
    sae = train_sae(TrainSaeConfig(input=str(dataset), output=str(output / "sae"), model=cfg.model,
                                   layer=point.layer, d_sae=point.d_sae, k=point.k, steps=cfg.steps,
                                   batch_size=cfg.batch_size, lr=cfg.lr, max_length=cfg.max_length, seed=cfg.seed,
                                   attention=cfg.attention, b_dec_init=cfg.b_dec_init),
                    activations=acts)
    trained = json.loads((sae / "training.json").read_text(encoding="utf-8"))
    encoder = SaeSparseEncoder(EncoderSettings(model=cfg.model, sae=str(sae), max_length=cfg.max_length))
    data = load_beir(folder, split, need_qrels=True)
    scores = run_sparse_system(encoder, data, output / "retrieval", RunSettings(), split=split)
    return {**asdict(point), "explained variance": trained["explained_variance"],
            "alive latents": trained["alive_fraction_on_sample"], "decoder bias init": trained["b_dec_init"],
            "nDCG@10": scores["nDCG@10"],
            "R@100": scores["R@100"], "doc nnz": scores["doc nnz"], "query nnz": scores["query nnz"],
            "seconds": round(time.time() - started, 1)}


def run_sweep(cfg: SweepConfig, points: Sequence[SweepPoint] | None = None) -> list[dict]:
    """Train and score every point (``cfg.points()`` unless given; cached); write sweep.json and
    sweep.md; return the rows."""
    dataset, output = resolve_beir_folder(cfg.dataset), Path(cfg.output)
    folder, split = retrieval_slice(dataset, output, cfg)
    acts_by_layer: dict[int, torch.Tensor] = {}
    rows = []
    for point in (cfg.points() if points is None else points):
        cached = output / point.name / "result.json"
        key = {"point": asdict(point), "config": cfg.shared()}
        row = load_row(cached, key)
        if row is not None:
            log.info("%s: cached", point.name)
        else:
            if point.layer not in acts_by_layer:
                acts_by_layer[point.layer] = sample_activations(dataset, cfg, point.layer)
            log.info("%s: training and scoring", point.name)
            row = run_point(point, acts_by_layer[point.layer], dataset, folder, split, cfg, output / point.name)
            save_row(cached, key, row)
        rows.append(row)
    write_json(output / "sweep.json", {"dataset": str(dataset), "split": split, "config": asdict(cfg), "rows": rows})
    table = markdown(rows, dataset.name, split, cfg)
    with atomic_write(output / "sweep.md") as out:
        out.write(table + "\n")
    print(table)
    return rows


COLUMNS = ("layer", "d_sae", "k", "nDCG@10", "R@100", "explained variance", "alive latents", "decoder bias init",
           "doc nnz", "query nnz", "seconds")


def markdown(rows: list[dict], name: str, split: str, cfg: SweepConfig) -> str:
    title = (f"**{name}**, {split} slice ({cfg.n_queries} queries, {cfg.n_docs} documents); SAEs of "
             f"{cfg.steps} steps x {cfg.batch_size} states from {cfg.max_tokens:,} token states; untrained SPLARE")
    # a row cached before the column existed matched this sweep's key, so its start was the one asked for
    # (zeros or mean: auto came with the column)
    return title + "\n\n" + markdown_table(COLUMNS, [[row.get(c, cfg.b_dec_init) for c in COLUMNS] for row in rows])


def main(argv: list[str] | None = None) -> None:
    run_sweep(parse_config(SweepConfig, argv, "python -m splare_pyserini.sae_sweep", __doc__))


cli = cli_main(main, resumable=True)

if __name__ == "__main__":
    cli()
