"""One sparse system on one BEIR set: encode -> impact index -> TREC run -> trec_eval.

``beir``, ``bench``, ``generalize``, ``xquad`` and the SAE sweep call :func:`run_sparse_system` (and,
for their BM25 rows, :func:`run_bm25_system`), so every figure they report comes from one code path (same index threads, same size measurement,
same rounding). Each stage is resumable and skipped when already complete.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .config import check_fields, option, require
from .datasets import Dataset, write_trec_qrels
from .encode import encode_corpus, encode_queries, write_topics
from .lucene.evaluate import DEFAULT_MEASURES, evaluate_run
from .lucene.fusion import FusionSettings, fuse_runs
from .lucene.index import index_bm25, index_size_bytes, index_vectors, read_index_info
from .lucene.postings import mean_nonzeros, posting_stats
from .lucene.search import MIN_IDF_HELP, open_bm25_searcher, open_searcher, search_topics

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """How a system is run on a set (not what it is): batching, depth, threads."""
    batch_size: int = option(32, "encoding batch size")
    chunk_size: int = option(1000, "documents per vector file")
    hits: int = option(1000, "hits per query")
    threads: int = option(1, "indexing and search threads (one: a deterministic index, so ties rank alike)")
    search_batch_size: int = option(1, "queries per Lucene batch", flag="--batch-size-search")
    min_idf: float = option(0.0, MIN_IDF_HELP + " (impact search only)")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("batch_size", "chunk_size", "hits", "threads", "search_batch_size"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        require(self.min_idf >= 0, f"min_idf: must be >= 0, got {self.min_idf}")

    def key(self) -> dict:
        """The settings as cached rows are keyed: ``min_idf`` only when set, so rows cached before it
        existed keep their keys."""
        key = asdict(self)
        if not self.min_idf:
            del key["min_idf"]
        return key


def qrels_file(data: Dataset, folder: Path, split: str = "test") -> Path:
    return write_trec_qrels(data.qrels, folder / f"qrels.{split}.trec")


def run_sparse_system(encoder, data: Dataset, folder: str | Path, run: RunSettings = RunSettings(),
                      measures: tuple[str, ...] = DEFAULT_MEASURES, split: str = "test",
                      corpus_encoder: Callable | None = None) -> dict:
    """Encode ``data`` with ``encoder`` under ``folder`` (``vectors/``, ``index/``, ``run.trec``) and score it.

    ``corpus_encoder(records, vectors_folder) -> EncodeSummary`` encodes the corpus instead of this
    process (``beir --ray``: on a Ray cluster); queries are always encoded here with ``encoder``."""
    folder = Path(folder)
    vectors, index = folder / "vectors", folder / "index"
    started = time.perf_counter()
    if corpus_encoder is not None:
        summary = corpus_encoder(data.corpus, vectors)
    else:
        summary = encode_corpus(data.corpus, vectors, encoder, run.batch_size, chunk_size=run.chunk_size,
                                source=data.name)
    seconds = time.perf_counter() - started
    summary.skipped.update(sum((r.skipped for r in data.reports), Counter()))
    log.info(summary.line(f"{data.name} corpus"))
    log.info(encode_queries(data.queries, vectors, encoder, source=data.name).line(f"{data.name} queries"))
    if read_index_info(index) is None:
        index_vectors(vectors, index, threads=run.threads, overwrite=True)
    searcher = open_searcher(index, str(vectors / "queries.jsonl"), run.min_idf)
    trec = search_topics(searcher, vectors / "topics.tsv", folder / "run.trec", run.hits, run.threads,
                         run.search_batch_size)
    row = {**evaluate_run(data.qrels, trec, qrels_file(data, folder, split), measures),
           "doc nnz": round(mean_nonzeros(vectors / "corpus"), 1),
           "query nnz": round(mean_nonzeros(vectors / "queries.jsonl"), 1),
           **posting_stats(vectors / "corpus", vectors / "queries.jsonl", run.min_idf).row(),
           "index MB": round(index_size_bytes(index) / 1e6, 3)}
    if summary.reused_chunks == 0:
        row["encode docs/s"] = round(len(data.corpus) / seconds, 1)
    return row


# where two encoders with equal compatibility keys still write other corpus vectors
DOCUMENT_SIDE_KEYS = ("max_length", "windows", "topk", "dtype", "sae_dtype")


def link_corpus_vectors(source: str | Path, folder: str | Path, info: dict) -> bool:
    """Hard-link ``source``'s corpus vectors and index into ``folder`` when they were encoded with the
    settings ``info`` records (the encoder then reuses every finished chunk, the pipeline the index): a
    system that only searches differently, or the same model scored on another split of the corpus. True
    where they were linked; nothing is linked where ``folder`` already has vectors."""
    import json
    import os
    import shutil

    from .model.settings import INFO_FILE, settings_diff

    source, folder = Path(source), Path(folder)
    recorded = source / "vectors" / INFO_FILE
    if (folder / "vectors").exists() or not recorded.is_file() or read_index_info(source / "index") is None:
        return False
    try:
        old = json.loads(recorded.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable: the system encodes its own vectors instead
        return False
    if settings_diff(old, info) or any(old.get(k) != info.get(k) for k in ("model_hash", "sae_hash")) \
            or any(old.get(k, info.get(k)) != info.get(k) for k in DOCUMENT_SIDE_KEYS):
        return False
    for part in ("vectors/corpus", "vectors/stats", "index"):
        shutil.copytree(source / part, folder / part, copy_function=os.link)
    shutil.copy2(recorded, folder / "vectors" / INFO_FILE)
    return True


def run_bm25_system(data: Dataset, beir_folder: str | Path, folder: str | Path, run: RunSettings = RunSettings(),
                    measures: tuple[str, ...] = DEFAULT_MEASURES, split: str = "test", language: str = "en") -> dict:
    """Stock BM25 (Anserini defaults, the analyzer of ``language``) on the same topics, under ``folder``
    (``index/``, ``run.trec``); an index built with another analyzer is rebuilt."""
    folder = Path(folder)
    index = folder / "index"
    info = read_index_info(index)
    if info is None or info.get("language", "en") != language:
        index_bm25(beir_folder, index, threads=run.threads, overwrite=True, language=language)
    topics = write_topics(data.queries, folder / "topics.tsv")
    trec = search_topics(open_bm25_searcher(index), topics, folder / "run.trec", run.hits, run.threads,
                         run.search_batch_size)
    return {**evaluate_run(data.qrels, trec, qrels_file(data, folder, split), measures),
            "index MB": round(index_size_bytes(index) / 1e6, 3), "language": language}


def run_fused_system(data: Dataset, systems: list[Path], folder: str | Path, run: RunSettings = RunSettings(),
                     measures: tuple[str, ...] = DEFAULT_MEASURES, split: str = "test",
                     fusion: FusionSettings = FusionSettings()) -> dict:
    """The fusion (Pyserini's; CombSUM unless ``fusion`` says otherwise) of the ``run.trec`` of each
    system folder, scored like every other row; cheap, so always recomputed from the runs it fuses."""
    folder = Path(folder)
    fused = fuse_runs([Path(system) / "run.trec" for system in systems], folder / "run.trec", method=fusion.fusion,
                      alpha=fusion.fusion_alpha, hits=run.hits)
    return evaluate_run(data.qrels, fused, qrels_file(data, folder, split), measures)


def encode_dense_corpus(dense, data: Dataset, path: Path, batch_size: int) -> tuple[list[str], "torch.Tensor"]:
    """(document ids, normalized embeddings), encoded once in token-length-sorted batches and cached at ``path``."""
    import torch
    from tqdm import tqdm

    from .io import atomic_write
    from .model.backbone import length_sorted_batches

    if not path.is_file():
        texts = [r.text for r in data.corpus]
        emb = torch.empty(len(texts), dense.model.config.hidden_size)
        lengths = dense.token_lengths(texts, dense.document_prefix)
        for idx in tqdm(length_sorted_batches(lengths, batch_size), desc="dense corpus", unit="batch",
                        dynamic_ncols=True):
            emb[torch.tensor(idx)] = dense.encode_documents([texts[i] for i in idx], batch_size)
        with atomic_write(path, "wb") as out:
            torch.save({"ids": [r.id for r in data.corpus], "embeddings": emb}, out)
    saved = torch.load(path)
    return saved["ids"], saved["embeddings"]


def run_dense_system(dense, data: Dataset, folder: str | Path, run: RunSettings = RunSettings(),
                     measures: tuple[str, ...] = DEFAULT_MEASURES, split: str = "test") -> dict:
    """A dense bi-encoder (``model.dense.DenseEncoder``, with the query/document prefixes it records):
    exact inner product over normalized vectors (a flat float32 index), written as a TREC run and scored by the same evaluation as the sparse systems."""
    from .io import atomic_write

    folder = Path(folder)
    doc_ids, emb = encode_dense_corpus(dense, data, folder / "corpus.pt", run.batch_size)
    k = min(run.hits, len(doc_ids))
    scores, top = (dense.encode_queries([q.text for q in data.queries], run.batch_size) @ emb.T).topk(k, dim=1)
    trec = folder / "run.trec"
    with atomic_write(trec) as out:
        for qi, q in enumerate(data.queries):
            for rank, (score, d) in enumerate(zip(scores[qi].tolist(), top[qi].tolist()), 1):
                out.write(f"{q.id} Q0 {doc_ids[d]} {rank} {score:.6f} dense\n")
    return {**evaluate_run(data.qrels, trec, qrels_file(data, folder, split), measures),
            "index MB": round(emb.numel() * 4 / 1e6, 3)}
