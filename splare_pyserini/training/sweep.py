"""Pick an SAE's layer, width (d_sae) and k by measurement.

Trains small TopK SAEs one factor at a time around a base configuration (every layer in
``--layers`` at the base width and k, every width in ``--d-sae`` at the base layer and k, ...)
on the same token budget, and scores each by what it is for here: retrieval with its latents
as the vocabulary, *before* any retrieval training (the untrained SPLARE encoder), on a slice
of the set's **train** split (so test queries never choose the SAE), next to explained
variance and the fraction of latents alive.

    python -m splare_pyserini.sae_sweep --dataset scifact --output runs/sae-sweep --layers 2 3 4 5 6

Each point is cached in ``<output>/<point>/result.json``; writes ``sweep.json`` and ``sweep.md``.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from .atomic import atomic_write
from .backbone import DEFAULT_MODEL
from .data import resolve_beir_folder, write_beir_slice
from .errors import InputError, cli_main
from .row_cache import load_row, save_row


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
    model: str = DEFAULT_MODEL
    steps: int = 60
    batch_size: int = 4096
    lr: float = 4e-4
    max_tokens: int = 300_000  # token states per layer, from a seeded random sample of the texts
    max_length: int = 256
    n_queries: int = 100  # retrieval slice of the train split
    n_docs: int = 1000
    seed: int = 0


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
    from .activations import collect_activations
    from .train_sae import _BackboneOnly, training_texts

    texts = training_texts(str(dataset))
    random.Random(cfg.seed).shuffle(texts)
    runner = _BackboneOnly(cfg.model, layer, cfg.max_length)
    total, chosen = 0, []
    for text, length in zip(texts, runner.token_lengths(texts)):
        chosen.append(text)
        total += max(0, length - 2)  # special tokens are masked out
        if total >= cfg.max_tokens:
            break
    return collect_activations(runner, chosen, max_tokens=cfg.max_tokens)


def retrieval_slice(dataset: Path, output: Path, cfg: SweepConfig) -> tuple[Path, str]:
    split = "train" if (dataset / "qrels" / "train.tsv").is_file() else "test"
    folder = output / f"slice-{split}"
    if not (folder / "corpus.jsonl").is_file():
        write_beir_slice(dataset, folder, n_queries=cfg.n_queries, n_docs=cfg.n_docs, split=split, seed=cfg.seed)
    return folder, split


def run_point(point: SweepPoint, acts: torch.Tensor, dataset: Path, folder: Path, split: str, cfg: SweepConfig,
              output: Path) -> dict:
    from .beir import run_beir
    from .encoder import EncoderSettings, SaeSparseEncoder
    from .train_sae import train_sae

    started = time.time()
    sae = train_sae(str(dataset), output / "sae", model=cfg.model, layer=point.layer, d_sae=point.d_sae, k=point.k,
                    steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, max_length=cfg.max_length,
                    seed=cfg.seed, activations=acts)
    trained = json.loads((sae / "training.json").read_text())
    encoder = SaeSparseEncoder(EncoderSettings(model=cfg.model, sae=str(sae), max_length=cfg.max_length))
    scores = run_beir(folder, output / "retrieval", encoder, split=split, bm25=False)["SPLARE"]
    return {**asdict(point), "explained variance": trained["explained_variance"],
            "alive latents": trained["alive_fraction_on_sample"], "nDCG@10": scores["nDCG@10"],
            "R@100": scores["R@100"], "doc nnz": scores["doc nnz"], "query nnz": scores["query nnz"],
            "seconds": round(time.time() - started, 1)}


def run_sweep(dataset: str | Path, output: str | Path, points: Sequence[SweepPoint],
              cfg: SweepConfig | None = None) -> list[dict]:
    """Train and score every point (cached); write sweep.json and sweep.md; return the rows."""
    cfg = cfg or SweepConfig()
    dataset, output = resolve_beir_folder(dataset), Path(output)
    folder, split = retrieval_slice(dataset, output, cfg)
    acts_by_layer: dict[int, torch.Tensor] = {}
    rows = []
    for point in points:
        point_dir = output / point.name
        cached = point_dir / "result.json"
        key = {"point": asdict(point), "config": asdict(cfg)}
        saved = load_row(cached, key)
        if saved is not None:
            rows.append(saved)
            print(f"{point.name}: cached", file=sys.stderr)
            continue
        if point.layer not in acts_by_layer:
            acts_by_layer[point.layer] = sample_activations(dataset, cfg, point.layer)  # ~0.5 GB per layer
        print(f"{point.name}: training and scoring", file=sys.stderr)
        row = run_point(point, acts_by_layer[point.layer], dataset, folder, split, cfg, point_dir)
        save_row(cached, key, row)
        rows.append(row)
    report = {"dataset": str(dataset), "split": split, "config": asdict(cfg), "rows": rows}
    with atomic_write(output / "sweep.json") as out:
        json.dump(report, out, indent=2)
    table = markdown(rows, dataset.name, split, cfg)
    with atomic_write(output / "sweep.md") as out:
        out.write(table + "\n")
    print(table)
    return rows


COLUMNS = ("layer", "d_sae", "k", "nDCG@10", "R@100", "explained variance", "alive latents", "doc nnz",
           "query nnz", "seconds")


def markdown(rows: list[dict], name: str, split: str, cfg: SweepConfig) -> str:
    lines = [f"**{name}**, {split} slice ({cfg.n_queries} queries, {cfg.n_docs} documents); SAEs of "
             f"{cfg.steps} steps x {cfg.batch_size} states from {cfg.max_tokens:,} token states; untrained SPLARE",
             "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splare_pyserini.sae_sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact", help="BEIR folder or name")
    parser.add_argument("--output", default="runs/sae-sweep")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--base", type=int, nargs=3, default=(4, 8192, 32), metavar=("LAYER", "D_SAE", "K"))
    parser.add_argument("--layers", type=int, nargs="*", default=[])
    parser.add_argument("--d-sae", type=int, nargs="*", default=[])
    parser.add_argument("--k", type=int, nargs="*", default=[])
    defaults = SweepConfig()
    for name in ("steps", "batch_size", "max_tokens", "n_queries", "n_docs", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    parser.add_argument("--lr", type=float, default=defaults.lr)
    args = parser.parse_args(argv)
    if min(args.base) < 1:
        raise InputError("--base LAYER D_SAE K must be positive")
    cfg = SweepConfig(model=args.model, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      max_tokens=args.max_tokens, n_queries=args.n_queries, n_docs=args.n_docs, seed=args.seed)
    points = sweep_points(SweepPoint(*args.base), args.layers, args.d_sae, args.k)
    run_sweep(args.dataset, args.output, points, cfg)


if __name__ == "__main__":
    cli_main(main)()
