"""SPLARE and BM25 searched together, one query at a time: the ``beir`` hybrid row as a searcher.

Pyserini's ``HybridSearcher`` fuses a dense and a sparse searcher; this one fuses two Lucene searchers (an
impact index searched with SAE-latent queries, and a BM25 index) by the same rule the run-file fusion
(:func:`~splare_pyserini.lucene.fusion.fuse_runs`) applies: each searcher's top ``depth`` hits, CombSUM of
their per-query min-max normalized scores (``alpha`` on SPLARE, 1 - alpha on BM25), or RRF. So a run
written through it ranks as fusing the two systems' run files does (tested), with no run files in between.

    from splare_pyserini import HybridSearcher, open_bm25_searcher, open_searcher
    hybrid = HybridSearcher(open_searcher("indexes/scifact-splare", encoder), open_bm25_searcher("indexes/scifact-bm25"))
    hits = hybrid.search("0-dimensional biomaterials show inductive properties.", k=10)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import InputError
from .fusion import RRF_K, fusion_problem


@dataclass(frozen=True)
class HybridHit:
    """A fused hit: what Pyserini's output writers read (``docid``, ``score``)."""
    docid: str
    score: float


def _normalized(hits) -> dict[str, float]:
    """Min-max normalized scores of one searcher's hits; all ones when they tie (as Pyserini's ``normalize``)."""
    if not hits:
        return {}
    scores = [float(h.score) for h in hits]
    low, high = min(scores), max(scores)
    return {h.docid: (s - low) / (high - low) if high > low else 1.0 for h, s in zip(hits, scores)}


def _reciprocal(hits, rrf_k: int) -> dict[str, float]:
    return {h.docid: 1.0 / (rrf_k + rank) for rank, h in enumerate(hits, start=1)}


class HybridSearcher:
    """``search``/``batch_search`` over two searchers (SPLARE's impact searcher, then BM25's), fused.

    ``fusion``: ``normalize`` (CombSUM, the default of ``beir``'s hybrid) or ``rrf``; ``alpha`` weighs the first
    searcher under ``normalize``; ``depth``: hits taken from each searcher before fusing (the runs' depth)."""

    def __init__(self, sparse, bm25, fusion: str = "normalize", alpha: float = 0.5, depth: int = 1000,
                 rrf_k: int = RRF_K):
        problem = fusion_problem(fusion, alpha)
        if problem:
            raise InputError(problem)
        if depth < 1:
            raise InputError(f"depth: must be >= 1, got {depth}")
        self.searchers = (sparse, bm25)
        self.fusion, self.alpha, self.depth, self.rrf_k = fusion, alpha, depth, rrf_k

    def fuse(self, hits_per_searcher: Sequence[Sequence], k: int) -> list[HybridHit]:
        """The top ``k`` of the fused hits; ties by docid, as Pyserini's run fusion sorts them."""
        total: dict[str, float] = {}
        rrf = self.fusion == "rrf"
        for hits, weight in zip(hits_per_searcher, (1.0, 1.0) if rrf else (self.alpha, 1.0 - self.alpha)):
            parts = _reciprocal(hits, self.rrf_k) if rrf else _normalized(hits)
            for docid, value in parts.items():
                total[docid] = total.get(docid, 0.0) + weight * value
        ranked = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:k]
        return [HybridHit(docid, score) for docid, score in ranked]

    def search(self, q: str, k: int = 10) -> list[HybridHit]:
        return self.fuse([s.search(q, self.depth) for s in self.searchers], k)

    def batch_search(self, queries: Sequence[str], qids: Sequence[str], k: int = 10,
                     threads: int = 1) -> dict[str, list[HybridHit]]:
        found = [s.batch_search(list(queries), list(qids), self.depth, threads) for s in self.searchers]
        return {qid: self.fuse([f[qid] for f in found], k) for qid in qids}
