"""Quality and cost side by side, every system in one run: BM25, SPLARE, pruned SPLARE,
vocabulary-SPLADE and dense MiniLM.

For each BEIR set (default: every one under $SPLARE_BEIR_DIR and the shipped data) each system
goes through the same run and evaluation code as the ``beir`` command and is reported with
nDCG@10, R@100, MRR@10, non-zeros, index size, encode docs/s, encode cost as a ratio to the
backbone's own forward pass up to the same layer and to the floor (that pass plus one dense
``d_in x d_sae`` matmul), query latency p50/p95 (one thread; queries pre-encoded and encoded on
the fly), queries per second of a two-thread batch search, and each figure's ratio to BM25. Each system's row is cached
per set under ``--output``, keyed by the settings it depends on; a set whose rows are not all cached is
measured again whole, so its ratios always compare timings taken side by side in one run (each row
records when, ``measured``). ``--quick`` is a CI-sized smoke run on a slice of each set.

    SPLARE_BEIR_DIR=../shared/data/beir python -m splare_pyserini.bench --output runs/bench

Writes ``bench.json``, ``bench.md`` and ``bench.png`` (nDCG@10 against query latency) and
prints, last, whether the cost targets hold.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..config import check_fields, option, parse_config, require
from ..datasets import list_beir_folders, load_beir, resolve_beir_folder, write_beir_slice
from ..errors import InputError, cli_main
from ..io import atomic_write, fresh_folder, load_row, save_row, write_json
from ..lucene.index import BM25_LANGUAGES
from ..model.artifacts import content_hash
from ..model.settings import DEFAULT_MODEL, EncoderSettings
from ..pipeline import RunSettings
from .report import add_ratios, check_targets, markdown, plot
from .systems import REGISTRY, SYSTEM_NAMES, System

log = logging.getLogger(__name__)
QUICK_SLICE = {"n_queries": 30, "n_docs": 200}


@dataclass(frozen=True)
class BenchConfig:
    """What to run and how; ``None`` fields are resolved by :meth:`resolved` (quick mode, shipped defaults)."""
    datasets: tuple[str, ...] | None = option(None, "BEIR folders or names (default: every set under "
                                                    "$SPLARE_BEIR_DIR and the shipped data)")
    output: str = option("runs/bench", "folder for cached rows, runs, bench.json, bench.md and bench.png")
    systems: tuple[str, ...] = option(SYSTEM_NAMES, "systems to run, in table order")
    quick: bool = option(False, "a CI-sized smoke run on a slice of each set, timing fewer documents once")
    force: bool = option(False, "recompute even where a row is cached (vectors and indexes too)")
    splare_model: str | None = option(None, f"SPLARE checkpoint (default: the shipped {DEFAULT_MODEL})")
    vocab_model: str | None = option(None, "vocabulary-SPLADE checkpoint from `train --sae vocab` (default: the "
                                           "untrained twin, the base MiniLM with its own vocabulary)")
    vocab_layer: int | None = option(None, "layer of the untrained twin (default: the shipped SPLARE model's)")
    topk: int | None = option(None, "keep the k largest terms per document (splare, vocab)")
    query_topk: int | None = option(None, "keep the k largest terms per query (splare, vocab)")
    token_k: int | None = option(None, "latents the SAE keeps per token (splare, splare-pruned; default: the "
                                       "model's own, a checkpoint's trained value)")
    pruned_topk: int = option(256, "splare-pruned: latents kept per document (0: all)")
    pruned_query_topk: int = option(64, "splare-pruned: latents kept per query (0: all)")
    pruned_quant_scale: float | None = option(None, "splare-pruned: impact = round(weight * scale) for both sides "
                                                    "(default: the model's own; a smaller one is a smaller index)")
    pruned_min_idf: float | None = option(None, "splare-pruned: Pyserini's --min-idf for its queries (default: "
                                                "the run's --min-idf)")
    max_length: int = option(EncoderSettings.max_length, "document tokens kept (every encoder)")
    query_max_length: int = option(EncoderSettings.query_max_length, "query tokens kept (sparse encoders)")
    cost_docs: int | None = option(None, "documents timed for encode cost (default: 256; with --quick: 48)")
    cost_repeats: int | None = option(None, "best of this many timings of encode cost (default: 2; with --quick: 1)")
    latency_queries: int | None = option(None, "queries timed for latency (default: all)")
    language: str = option("en", "analyzer of the BM25 system (Anserini's -language: en, de, es, ar, zh, ...)",
                           choices=BM25_LANGUAGES)
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self) -> None:
        # the Python API may pass paths and lists; the record (bench.json, cache keys) holds JSON types
        object.__setattr__(self, "datasets", tuple(str(d) for d in self.datasets) if self.datasets else None)
        object.__setattr__(self, "output", str(self.output))
        object.__setattr__(self, "systems", tuple(self.systems))
        unknown = [s for s in self.systems if s not in REGISTRY]
        require(not unknown, f"systems: unknown {unknown}; choose from {list(SYSTEM_NAMES)}")
        require(bool(self.systems), f"systems: choose at least one of {list(SYSTEM_NAMES)}")
        check_fields(self)
        for name in ("vocab_layer", "topk", "query_topk", "token_k", "max_length",
                     "query_max_length", "cost_docs", "cost_repeats", "latency_queries"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"{name}: must be >= 1, got {value}")
        for name in ("pruned_topk", "pruned_query_topk", "pruned_min_idf"):
            value = getattr(self, name)
            require(value is None or value >= 0, f"{name}: must be >= 0, got {value}")
        require(self.pruned_quant_scale is None or self.pruned_quant_scale > 0,
                f"pruned_quant_scale: must be > 0, got {self.pruned_quant_scale}")

    @property
    def output_path(self) -> Path:
        return Path(self.output)

    def resolved(self) -> "BenchConfig":
        """Every ``None`` default filled in: quick mode times fewer documents, once; the untrained
        twin sits at the shipped model's layer. Idempotent; rows are keyed by resolved values."""
        from ..model.checkpoint import read_checkpoint

        return replace(self, cost_docs=self.cost_docs or (48 if self.quick else 256),
                       cost_repeats=self.cost_repeats or (1 if self.quick else 2),
                       vocab_layer=self.vocab_layer or read_checkpoint(DEFAULT_MODEL).layer)


OPTIONAL_KEYS = ("token_k", "pruned_min_idf", "pruned_quant_scale")  # keyed only when set


def cache_key(system: System, cfg: BenchConfig, n_docs: int, n_queries: int) -> dict:
    """What one system's row depends on: its config fields, the set's size and its model's content
    (a default retrained in place is measured again)."""
    # OPTIONAL_KEYS and the run's min_idf only when asked: rows cached before those fields existed keep their keys
    config = {name: cfg.run.key() if name == "run" else getattr(cfg, name) for name in system.key_fields
              if not (name in OPTIONAL_KEYS and getattr(cfg, name) is None)}
    key = {"system": system.name, "config": config, "docs": n_docs, "queries": n_queries,
           "weights": content_hash(system.weights(cfg))}
    return json.loads(json.dumps(key, default=asdict))  # as saved: tuples are lists, configs dicts


def bench_dataset(folder: Path, work: Path, cfg: BenchConfig) -> dict[str, dict]:
    """{system: row} for one BEIR folder; each row is cached in ``<work>/<system>/result.json``."""
    cfg = cfg.resolved()
    data = load_beir(folder, "test", need_qrels=True)
    keys = {name: cache_key(REGISTRY[name], cfg, len(data.corpus), len(data.queries)) for name in cfg.systems}
    rows: dict[str, dict | None] = {name: None if cfg.force else load_row(work / name / "result.json", key)
                                    for name, key in keys.items()}
    if any(row is None for row in rows.values()):
        # timings are compared only side by side: once one row is measured, every row of the set is
        # measured again in this run (an unchanged row's vectors and index are reused, so only its
        # searches and timings run again)
        rows = dict.fromkeys(rows)
    measured = time.strftime("%Y-%m-%dT%H:%M:%S")
    for name, key in keys.items():
        system = REGISTRY[name]
        row = rows[name]
        log.info("%s %s: %s", folder.name, name, "cached" if row is not None else "running")
        if row is None:
            row = {**system.run(data, folder, fresh_folder(work / name, key, cfg.force), cfg), "measured": measured}
            save_row(work / name / "result.json", key, row)
        rows[name] = {"label": system.label_for(cfg), **row}
    add_ratios(rows)
    return rows


def run_bench(cfg: BenchConfig | None = None, **changes) -> dict:
    """Run (or load from cache) every system on every set; write bench.json, bench.md, bench.png.

    ``run_bench(datasets=["scifact"], output="runs/bench")`` is ``run_bench(BenchConfig(...))``."""
    cfg = replace(cfg or BenchConfig(), **changes).resolved()
    output = cfg.output_path
    folders = [resolve_beir_folder(d) for d in cfg.datasets] if cfg.datasets else list_beir_folders()
    if not folders:
        raise InputError("no BEIR folders found: pass --datasets or set $SPLARE_BEIR_DIR")
    results: dict[str, dict[str, dict]] = {}
    for folder in folders:
        name = folder.name
        if cfg.quick:
            sliced = output / "slices" / name
            if not (sliced / "corpus.jsonl").is_file():
                write_beir_slice(folder, sliced, **QUICK_SLICE)
            folder, name = sliced, f"{name} (quick slice)"
        results[name] = bench_dataset(folder, output / folder.name, cfg)
    targets = check_targets(results)
    report = {"config": asdict(cfg), "quick": cfg.quick, "results": results, "targets": targets}
    write_json(output / "bench.json", report)
    table = markdown(results)
    with atomic_write(output / "bench.md") as out:
        out.write(table + "\n")
    plot(results, output / "bench.png")
    print(table)
    log.info("wrote %s, %s, %s", output / "bench.json", output / "bench.md", output / "bench.png")
    for t in targets:
        print(f"{'HOLDS' if t['holds'] else 'MISSED'}: {t['target']} (measured {t['measured']})")
    return report


def main(argv: list[str] | None = None) -> None:
    run_bench(parse_config(BenchConfig, argv, "python -m splare_pyserini.bench", __doc__))


cli = cli_main(main, resumable=True)
