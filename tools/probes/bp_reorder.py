#!/usr/bin/env python
"""Does ordering documents by recursive graph bisection (BP) shrink an impact index or speed up its search?

Lucene stores each posting list as document-id gaps and impacts in blocks of 128, so an order that puts documents
sharing terms together shrinks the gaps (Dhulipala et al., KDD 2016; PISA and Lucene's BPIndexReorderer, which
Anserini's jar lacks, run it). This probe orders a `beir` output's SPLARE vectors by BP (binary document-term
matrix, 20 swap rounds per bisection, partitions down to 32 documents), indexes them in that order beside the
index `beir` built, checks that the run is byte-identical, and times both and BM25 side by side (one thread,
pre-encoded queries, best p50/p95 of 3 interleaved rounds).

    python tools/probes/bp_reorder.py runs/nfcorpus runs/bp-nfcorpus
"""
from __future__ import annotations

import gzip
import json
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from splare_pyserini.bench.timing import percentiles_ms, time_each, with_threads
from splare_pyserini.datasets import read_tsv_topics
from splare_pyserini.errors import InputError
from splare_pyserini.lucene.index import index_size_bytes, run_anserini_indexer
from splare_pyserini.lucene.search import open_bm25_searcher, open_searcher, search_topics

BP_ITERATIONS = 20  # Lucene's BPIndexReorderer and PISA default to 20 swap rounds per bisection
BP_MIN_PARTITION = 32  # Lucene's default: a smaller half is left in its order


def _log_gap_cost_gain(n_from: np.ndarray, n_to: np.ndarray, size_from: int, size_to: int) -> np.ndarray:
    """Per term, the drop in the bisection's cost when one document holding it moves from one half to
    the other. A term held by n of a half's N documents costs about n log2(N / (n + 1)) bits of gaps
    there (Dhulipala et al.'s approximation); the gain is the cost before the move minus after it."""
    def cost(n: np.ndarray, size: int) -> np.ndarray:
        return n * (np.log2(size) - np.log2(np.maximum(n + 1.0, 1.0)))  # n = -1 only for unused terms

    return cost(n_from, size_from) - cost(n_from - 1, size_from) + cost(n_to, size_to) - cost(n_to + 1, size_to)


def _bisect(indptr: np.ndarray, indices: np.ndarray, docs: np.ndarray, iterations: int) -> np.ndarray:
    """One bisection of ``docs`` (rows of the CSR matrix): the documents reordered so that the first half
    and the second are the two sides after the swap rounds, each side in its input order."""
    n = len(docs)
    starts, ends = indptr[docs], indptr[docs + 1]
    lengths = ends - starts
    # the partition's postings as (local document, local term) pairs
    rows = np.repeat(np.arange(n), lengths)
    first = np.cumsum(lengths) - lengths  # each row's first posting among the partition's
    cols = indices[np.arange(int(lengths.sum())) - np.repeat(first - starts, lengths)]
    terms, local = np.unique(cols, return_inverse=True)
    right = np.arange(n) >= n // 2  # False: first half, True: second
    size_left, size_right = n // 2, n - n // 2
    for _ in range(iterations):
        side = right[rows]
        n_left = np.bincount(local[~side], minlength=len(terms)).astype(np.float64)
        n_right = np.bincount(local[side], minlength=len(terms)).astype(np.float64)
        to_right = _log_gap_cost_gain(n_left, n_right, size_left, size_right)
        to_left = _log_gap_cost_gain(n_right, n_left, size_right, size_left)
        gain = np.bincount(rows, weights=np.where(side, to_left[local], to_right[local]), minlength=n)
        left_docs, right_docs = np.flatnonzero(~right), np.flatnonzero(right)
        left_docs = left_docs[np.argsort(-gain[left_docs], kind="stable")]
        right_docs = right_docs[np.argsort(-gain[right_docs], kind="stable")]
        m = min(len(left_docs), len(right_docs))
        pair_gain = gain[left_docs[:m]] + gain[right_docs[:m]]
        swaps = int(np.argmax(pair_gain <= 0)) if (pair_gain <= 0).any() else m
        if swaps == 0:
            break
        right[left_docs[:swaps]] = True
        right[right_docs[:swaps]] = False
    return np.concatenate([docs[~right], docs[right]])


def bp_order(indptr: np.ndarray, indices: np.ndarray, iterations: int = BP_ITERATIONS,
             min_partition: int = BP_MIN_PARTITION) -> np.ndarray:
    """A permutation of the rows of a binary CSR document-term matrix (``indptr``, ``indices``) that puts
    documents sharing terms next to each other: position i of the result is the row indexed i-th."""
    indptr, indices = np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64)
    order = np.arange(len(indptr) - 1)
    spans = [(0, len(order))]  # partitions still to bisect, as [start, end) of ``order``
    while spans:
        start, end = spans.pop()
        if end - start <= min_partition:
            continue
        order[start:end] = _bisect(indptr, indices, order[start:end], iterations)
        middle = start + (end - start) // 2
        spans += [(start, middle), (middle, end)]
    return order


def log_gap_bits(indptr: np.ndarray, indices: np.ndarray, order: np.ndarray | None = None) -> float:
    """Mean over postings of log2(1 + gap) in document order ``order`` (default: as stored): the
    compressibility that the reordering lowers (the first posting of a term counts its document id)."""
    n_docs = len(indptr) - 1
    position = np.empty(n_docs, dtype=np.int64)
    position[np.arange(n_docs) if order is None else order] = np.arange(n_docs)
    rows = np.repeat(position, np.diff(indptr))
    by_term = np.lexsort((rows, indices))
    terms, docs = indices[by_term], rows[by_term]
    gaps = np.diff(docs, prepend=0)
    first = np.r_[True, terms[1:] != terms[:-1]]
    gaps[first] = docs[first] + 1
    return float(np.log2(1.0 + gaps).mean()) if len(gaps) else 0.0


def _open_lines(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_collection(files: Sequence[Path]) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Every line of the JsonVectorCollection ``files`` (as stored) and the binary document-term matrix of
    their vectors as CSR ``indptr``, ``indices``; a line without a ``vector`` object is an error naming it."""
    lines: list[bytes] = []
    vocabulary: dict[str, int] = {}
    indptr, indices = array("q", [0]), array("q")  # 8 bytes a posting, not a Python int's 28
    for path in files:
        with _open_lines(path) as handle:
            for lineno, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    vector = json.loads(raw)["vector"]
                    terms = [vocabulary.setdefault(term, len(vocabulary)) for term in vector]
                except (ValueError, KeyError, TypeError):
                    raise InputError(f"{path}:{lineno}: not a JsonVectorCollection line (a JSON object with "
                                     "a 'vector' object)") from None
                indices.extend(terms)
                indptr.append(len(indices))
                lines.append(raw if raw.endswith(b"\n") else raw + b"\n")
    return lines, np.frombuffer(indptr, dtype=np.int64), np.frombuffer(indices, dtype=np.int64)


def main() -> None:
    out, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    vectors = out / "splare" / "vectors"
    files = sorted(p for p in (vectors / "corpus").iterdir() if p.suffix in (".jsonl", ".gz"))
    lines, indptr, indices = read_collection(files)
    started = time.time()
    order = bp_order(indptr, indices)
    print(f"BP order of {len(lines)} documents in {time.time() - started:.1f} s; mean log2(1 + gap) per posting "
          f"{log_gap_bits(indptr, indices):.3f} as encoded, {log_gap_bits(indptr, indices, order):.3f} BP-ordered, "
          f"{log_gap_bits(indptr, indices, np.random.default_rng(0).permutation(len(lines))):.3f} shuffled")
    index = work / "bp-index"
    if not index.is_dir():
        (work / "collection").mkdir(exist_ok=True)
        with open(work / "collection" / "docs.jsonl", "wb") as handle:
            for i in order:
                handle.write(lines[i])
        run_anserini_indexer(["-collection", "JsonVectorCollection", "-input", str(work / "collection"), "-index",
                              str(index), "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized",
                              "-threads", "1"])
        (index / "splare_index_info.json").write_text((out / "splare" / "index" / "splare_index_info.json").read_text())
    sizes = {name: index_size_bytes(path) / 1e6 for name, path in
             (("as encoded", out / "splare" / "index"), ("BP", index), ("BM25", out / "bm25" / "index"))}
    print("index MB: " + ", ".join(f"{k} {v:.3f}" for k, v in sizes.items()))
    run = search_topics(open_searcher(index, str(vectors / "queries.jsonl")), vectors / "topics.tsv",
                        work / "bp.trec", hits=1000)
    print("run identical to the index as encoded:", run.read_bytes() == (out / "splare" / "run.trec").read_bytes())
    queries = [q.text for q in read_tsv_topics(vectors / "topics.tsv")]
    searchers = {"BM25": open_bm25_searcher(out / "bm25" / "index"),
                 "as encoded": open_searcher(out / "splare" / "index", str(vectors / "queries.jsonl")),
                 "BP": open_searcher(index, str(vectors / "queries.jsonl"))}
    best: dict[str, tuple[float, float]] = {}
    for _ in range(3):
        for name, searcher in searchers.items():
            p = percentiles_ms(with_threads(1, lambda: time_each(range(len(queries)),
                                                                  lambda i: searcher.search(queries[i], 1000))))
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], p["p50"]), min(old[1], p["p95"]))
    print("p50 / p95 ms: " + ", ".join(f"{k} {v[0]:.1f} / {v[1]:.1f}" for k, v in best.items()))


if __name__ == "__main__":
    main()
