"""End to end on a BEIR collection: encode -> impact index -> TREC run -> trec_eval, next to BM25.

Everything lands under ``--output``: ``splare/`` (``vectors/``, ``index/``, ``run.trec``), ``bm25/``
(``index/``, ``run.trec``), ``hybrid/run.trec`` (the two runs fused through Pyserini's fusion: each query's
min-max normalized scores summed, CombSUM, or reciprocal ranks with ``--fusion rrf``: the hybrid a user can deploy
beside BM25; with CombSUM, RRF's run is written to ``hybrid-rrf/`` and scored too) and ``scores.json``. Each stage is resumable and skipped when already
complete; each also runs alone (``encode``, ``index``, ``search``, ``evaluate`` modules).
``--ray ADDRESS --shard-num N`` encodes the corpus's N shards on a Ray cluster (see
``splare_pyserini.distributed``); queries, indexing and search stay in this process.

    python -m splare_pyserini.beir --dataset scifact --output runs/scifact
    python -m splare_pyserini.beir --dataset nfcorpus --output runs/nfcorpus --baselines splade-tiny dense-mpnet
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .config import check_fields, option, parse_config, require
from .datasets import load_beir, resolve_beir_folder
from .distributed import RaySettings
from .errors import cli_main
from .io import markdown_table, write_json
from .model.artifacts import BASE_MODEL, MPNET
from .lucene.fusion import FusionSettings
from .lucene.index import BM25_LANGUAGES
from .model.encoder import SaeSparseEncoder
from .model.settings import EncoderSettings
from .pipeline import RunSettings, run_bm25_system, run_fused_system, run_sparse_system

log = logging.getLogger(__name__)
COLUMNS = ("nDCG@10", "R@100", "doc nnz", "query nnz", "terms", "posting df", "index MB", "encode docs/s")


def _splade_tiny(data, folder: Path, cfg: "BeirConfig") -> dict:
    """Vocabulary SPLADE trained on MS MARCO (no one here trained it), through its own MLM head."""
    from .model.settings import MLM

    return run_sparse_system(SaeSparseEncoder("splade-tiny", sae=MLM, device=cfg.device), data, folder, cfg.run,
                             split=cfg.split)


def _dense(model: str):
    def run(data, folder: Path, cfg: "BeirConfig") -> dict:
        from .model.dense import DenseEncoder
        from .pipeline import run_dense_system

        return run_dense_system(DenseEncoder(model, device=cfg.device), data, folder, cfg.run, split=cfg.split)
    return run


BASELINES = {"splade-tiny": ("SPLADE-tiny", _splade_tiny), "dense": ("dense MiniLM", _dense(BASE_MODEL)),
             "dense-mpnet": ("dense mpnet", _dense(MPNET))}


@dataclass(frozen=True)
class BeirConfig:
    output: str = option(help="folder for vectors, indexes, runs and scores.json")
    dataset: str = option("scifact", "BEIR folder, or a name (looked up in $SPLARE_BEIR_DIR, then the shipped sets)")
    split: str = option("test", "qrels split whose queries are run")
    bm25: bool = option(True, "run the BM25 baseline too")
    hybrid: bool = option(True, "with --bm25, also score the fusion of SPLARE and BM25 (--fusion: CombSUM of "
                                "min-max normalized scores by default)")
    baselines: tuple[str, ...] = option((), "more systems scored beside SPLARE, none by default: "
                                            f"{', '.join(BASELINES)}")
    language: str = option("en", "analyzer of the BM25 baseline (Anserini's -language: en, de, es, ar, zh, ...)",
                           choices=BM25_LANGUAGES)
    device: str = option("cpu", "torch device")
    shard_num: int = option(1, "corpus shards encoded across the Ray workers (with --ray; the files are "
                               "those of encode --shard-id 0..N-1 --shard-num N)")
    run: RunSettings = field(default_factory=RunSettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    distributed: RaySettings = field(default_factory=RaySettings)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.shard_num >= 1, f"shard_num: must be >= 1, got {self.shard_num}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        require(not unknown, f"baselines: unknown {unknown}; choose from {', '.join(BASELINES)}")
        require(self.shard_num == 1 or self.distributed.ray is not None,
                "shard_num: more than one shard needs --ray (one process writes one shard per run)")


def run_beir(cfg: BeirConfig, encoder: SaeSparseEncoder | None = None) -> dict[str, dict]:
    """Run SPLARE (and BM25) on one BEIR set; returns {system: scores and costs}, also in scores.json."""
    output = Path(cfg.output)
    folder = resolve_beir_folder(cfg.dataset)
    data = load_beir(folder, cfg.split, need_qrels=True)
    encoder = encoder or SaeSparseEncoder(cfg.encoder, device=cfg.device)
    corpus_encoder = _ray_corpus_encoder(cfg, data.name) if cfg.distributed.ray is not None else None
    results = {"SPLARE": run_sparse_system(encoder, data, output / "splare", cfg.run, split=cfg.split,
                                           corpus_encoder=corpus_encoder)}
    if cfg.bm25:
        results["BM25"] = run_bm25_system(data, folder, output / "bm25", cfg.run, split=cfg.split,
                                          language=cfg.language)
        if cfg.hybrid:
            runs = [output / "splare", output / "bm25"]
            results[cfg.fusion.label()] = run_fused_system(data, runs, output / "hybrid", cfg.run, split=cfg.split,
                                                           fusion=cfg.fusion)
            if not cfg.fusion.is_rrf():  # RRF beside it: the generalization issue's hybrid, and the one before
                rrf = FusionSettings("rrf")
                results[rrf.label()] = run_fused_system(data, runs, output / "hybrid-rrf", cfg.run, split=cfg.split,
                                                        fusion=rrf)
    for name in cfg.baselines:
        label, run_baseline = BASELINES[name]
        results[label] = run_baseline(data, output / name, cfg)
    write_json(output / "scores.json", {"dataset": str(cfg.dataset), "split": cfg.split, "encoder": encoder.info(),
                                        "results": results})
    return results


def _ray_corpus_encoder(cfg: BeirConfig, source: str):
    """Encode the corpus's ``--shard-num`` shards on Ray (``--ray``) into the vectors folder."""
    from .distributed import encode_on_ray
    from .encode import EncodeSummary

    def encode(records, vectors):
        return encode_on_ray(records, [], vectors, cfg.encoder, cfg.shard_num, cfg.distributed,
                             batch_size=cfg.run.batch_size, chunk_size=cfg.run.chunk_size, source=source,
                             device=cfg.device).get("corpus", EncodeSummary())
    return encode


def format_table(dataset: str, results: dict[str, dict]) -> str:
    def cell(row: dict, column: str) -> str:
        value = row.get(column, "")
        return f"{value:.4f}" if column in ("nDCG@10", "R@100") and value != "" else str(value)
    def label(system: str, row: dict) -> str:
        language = row.get("language", "en")
        return system if language == "en" else f"{system} ({language} analyzer)"
    return markdown_table((dataset,) + COLUMNS, [[label(system, row)] + [cell(row, c) for c in COLUMNS]
                                                for system, row in results.items()])


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(BeirConfig, argv, "python -m splare_pyserini.beir", __doc__)
    print(format_table(Path(cfg.dataset).name, run_beir(cfg)))


cli = cli_main(main, resumable=True)

if __name__ == "__main__":
    cli()
