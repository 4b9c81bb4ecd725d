"""Where hard negatives come from: a small protocol with four sources.

``bm25`` mines them with Anserini in a child process (the JVM never enters the training
process); a JSONL file brings your own; ``none`` leaves only in-batch and random negatives;
:class:`InMemoryNegatives` lets tests and notebooks pass a mapping.

The file format is one JSON object per line, keyed by the query *text* (the text the pair's query
has; whitespace is normalized), with document ids of the corpus, best first::

    {"query": "what is known about protein folding", "negatives": ["d12", "d7", "d40"]}

Several lines for one query are concatenated; a positive among the negatives is dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Mapping, Protocol, Sequence

from ..datasets import iter_json_lines
from ..errors import ArtifactError, InputError
from .pairs import Pair

SOURCES = ("bm25", "none")


def _key(query: str) -> str:
    return " ".join(query.split())


class NegativeSource(Protocol):
    def mine(self, queries: Sequence[str]) -> list[list[str]]:
        """Ranked document ids per query, best first (positives may be among them)."""


class NoNegatives:
    """No hard negatives: each query's extra document is a random other document of the corpus."""

    def mine(self, queries: Sequence[str]) -> list[list[str]]:
        return [[] for _ in queries]


class InMemoryNegatives:
    """Negatives from a mapping ``query text -> document ids``; queries it lacks get none."""

    def __init__(self, mapping: Mapping[str, Sequence[str]]):
        self.mapping = {_key(query): list(ids) for query, ids in mapping.items()}

    def mine(self, queries: Sequence[str]) -> list[list[str]]:
        return [list(self.mapping.get(_key(q), ())) for q in queries]


class FileNegatives(InMemoryNegatives):
    """Negatives from a JSONL file (see the module docstring for its format)."""

    def __init__(self, path: str | Path):
        mapping: dict[str, list[str]] = {}
        for lineno, obj in iter_json_lines(path):
            query, negatives = obj.get("query"), obj.get("negatives")
            if not isinstance(query, str) or not isinstance(negatives, list) \
                    or not all(isinstance(d, (str, int)) for d in negatives):
                raise InputError(f"{path}:{lineno}: expected {{\"query\": <text>, \"negatives\": [<doc id>, ...]}}")
            mapping.setdefault(_key(query), []).extend(str(d) for d in negatives)
        super().__init__(mapping)


class BM25Negatives:
    """BM25's top ``depth`` documents (Pyserini defaults), indexing the corpus once into ``cache``."""

    def __init__(self, folder: str | Path, cache: str | Path, depth: int, threads: int = 2):
        self.folder, self.cache, self.depth, self.threads = str(folder), str(cache), depth, threads

    def mine(self, queries: Sequence[str]) -> list[list[str]]:
        from ..lucene.bm25_negatives import bm25_top_docs_in_child

        return bm25_top_docs_in_child(list(queries), self.folder, self.cache, self.depth, self.threads)


def negative_source(spec: str, folder: str | Path, cache: str | Path, depth: int) -> NegativeSource:
    """``bm25``, ``none`` or the path of a JSONL file of negatives."""
    if spec == "bm25":
        return BM25Negatives(folder, cache, depth)
    if spec == "none":
        return NoNegatives()
    return FileNegatives(spec)


def attach_negatives(pairs: list[Pair], source: NegativeSource, depth: int,
                     corpus_ids: Collection[str] | None = None) -> None:
    """Fill ``pair.negatives`` with the source's first ``depth`` documents for its query, without
    the query's positives; a document outside ``corpus_ids`` is an error naming it."""
    by_query: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_query.setdefault(pair.query, []).append(pair)
    queries = sorted(by_query)
    hits = source.mine(queries)
    if len(hits) != len(queries):
        raise ArtifactError(f"{type(source).__name__} answered {len(hits)} lists for {len(queries)} queries")
    for query, doc_ids in zip(queries, hits):
        positives = {p.positive_id for p in by_query[query]}
        negatives = [d for d in dict.fromkeys(doc_ids) if d not in positives][:depth]
        unknown = [d for d in negatives if corpus_ids is not None and d not in corpus_ids]
        if unknown:
            raise InputError(f"hard negative {unknown[0]!r} of query {query!r} is not a document of the corpus")
        for pair in by_query[query]:
            pair.negatives = negatives
