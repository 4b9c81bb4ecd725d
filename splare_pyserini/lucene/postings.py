"""What an impact index of a set of vectors holds, read from the JsonVectorCollection files themselves.

Lucene's cost for an impact query is the postings its terms point to, and a term separates documents
only if few of them have it. So beside the non-zeros per vector, every sparse row reports how many
distinct terms the corpus uses, how broad a typical posting's term is (the mean, over every posting,
of the fraction of documents holding its term: near 1 means terms shared by almost every document),
and the postings a query reads.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


def vector_files(path: Path) -> list[Path]:
    """A JsonVectorCollection file, or every ``*.jsonl`` of a folder (in name order)."""
    return [path] if path.is_file() else sorted(path.glob("*.jsonl"))


def read_vectors(path: Path):
    """Yield the ``vector`` of every line of a vector file or folder."""
    for file in vector_files(path):
        with open(file, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)["vector"]


def mean_nonzeros(path: Path) -> float:
    """Mean number of terms per vector in a JsonVectorCollection file or folder."""
    total = count = 0
    for vector in read_vectors(path):
        total += len(vector)
        count += 1
    return total / max(count, 1)


def document_frequencies(corpus: Path) -> tuple[Counter, int]:
    """Documents holding each term, and the number of documents."""
    freq: Counter = Counter()
    documents = 0
    for vector in read_vectors(corpus):
        freq.update(vector.keys())
        documents += 1
    return freq, documents


def posting_breadth(freq: Counter, documents: int) -> float:
    """Mean over postings of the fraction of documents holding the posting's term (a term of document
    frequency df has df postings, each weighing df / N)."""
    postings = sum(freq.values())
    return sum(df * df for df in freq.values()) / (max(documents, 1) * max(postings, 1))


def searched(freq: Counter, documents: int, min_idf: float = 0.0) -> set[str]:
    """The terms Pyserini's impact searcher sends to Lucene: idf = ln(N / df) above ``min_idf``."""
    return {t for t, df in freq.items() if math.log(documents / df) > min_idf}


def mean_postings(queries: Path, freq: Counter, documents: int, min_idf: float = 0.0) -> float:
    """Mean over queries of the postings their searched terms (idf above ``min_idf``) point to: what an
    impact query reads in Lucene."""
    kept = searched(freq, documents, min_idf)
    totals = [sum(freq[t] for t in vector if t in kept) for vector in read_vectors(queries)]
    return sum(totals) / max(len(totals), 1)


@dataclass(frozen=True)
class PostingStats:
    terms: int  # distinct terms in the corpus
    posting_df: float  # mean over postings of the fraction of documents holding the posting's term
    postings_per_query: float

    def row(self) -> dict:
        return {"terms": self.terms, "posting df": round(self.posting_df, 4),
                "postings per query": round(self.postings_per_query)}


def posting_stats(corpus: Path, queries: Path, min_idf: float = 0.0) -> PostingStats:
    """Term count, posting breadth and postings read per query of an encoded corpus and its queries
    (the query terms searched at Pyserini's ``min_idf``: idf above it)."""
    freq, documents = document_frequencies(corpus)
    return PostingStats(terms=len(freq), posting_df=posting_breadth(freq, documents),
                        postings_per_query=mean_postings(queries, freq, documents, min_idf))
