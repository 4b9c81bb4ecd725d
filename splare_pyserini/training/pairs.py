"""Training pairs, offline: supervised (train qrels) and self-supervised (from the corpus),
with hard negatives mined by BM25 through Pyserini."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from .data import iter_json_lines, load_beir, resolve_beir_folder

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


@dataclass
class Pair:
    """A query, its positive document (id and the text the model sees) and hard-negative ids."""
    query: str
    positive_id: str
    positive_text: str
    negatives: list[str] = field(default_factory=list)


def corpus_texts(folder: Path) -> dict[str, tuple[str, str]]:
    """doc id -> (title, text), raw BEIR fields."""
    return {str(obj["_id"]): ((obj.get("title") or "").strip(), (obj.get("text") or "").strip())
            for _, obj in iter_json_lines(folder / "corpus.jsonl")}


def joined(title: str, text: str) -> str:
    return " ".join(p for p in (title, text) if p)


def supervised_pairs(dataset: str | Path, split: str = "train") -> list[Pair]:
    """One pair per judged-relevant (query, document) of ``qrels/<split>.tsv``."""
    folder = resolve_beir_folder(dataset)
    data = load_beir(folder, split, need_qrels=True)
    docs = corpus_texts(folder)
    pairs = []
    for query in data.queries:
        for doc_id, rel in sorted(data.qrels[query.id].items()):
            if rel > 0 and doc_id in docs:
                pairs.append(Pair(query.text, doc_id, joined(*docs[doc_id])))
    return pairs


def self_supervised_pairs(dataset: str | Path, seed: int = 0, per_doc: int = 1) -> list[Pair]:
    """Zero-shot pairs from the corpus alone (no queries, no labels): a sentence of a document
    as the query and the document without that sentence as the positive (inverse cloze task),
    or the title as the query and the text as the positive when a document has one sentence."""
    folder = resolve_beir_folder(dataset)
    rng = random.Random(seed)
    pairs = []
    for doc_id, (title, text) in sorted(corpus_texts(folder).items()):
        sentences = [s for s in _SENTENCE.split(text) if len(s.split()) >= 5]
        for _ in range(per_doc):
            if len(sentences) >= 2:
                pick = rng.randrange(len(sentences))
                rest = " ".join(s for i, s in enumerate(sentences) if i != pick)
                pairs.append(Pair(sentences[pick], doc_id, joined(title, rest)))
            elif title and text:
                pairs.append(Pair(title, doc_id, text))
    return pairs


def add_bm25_negatives(pairs: list[Pair], dataset: str | Path, cache: Path, depth: int = 30,
                       threads: int = 2) -> None:
    """Fill ``pair.negatives`` with BM25's top documents for the query, positives removed.

    The search runs in a child process: a JVM booted inside the training process crashed it
    (SIGSEGV in libtorch under the JVM's signal handlers, seen mid-training), so training
    keeps the JVM out of its own address space. The child is ``python -m splare_pyserini.pairs``,
    not a multiprocessing spawn, which would re-run a user's script that lacks a main guard."""
    by_query: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_query.setdefault(pair.query, []).append(pair)
    queries = sorted(by_query)
    hits = bm25_top_docs_in_child(queries, str(resolve_beir_folder(dataset)), str(cache), depth, threads)
    for query, doc_ids in zip(queries, hits):
        positive_ids = {p.positive_id for p in by_query[query]}
        negatives = [doc_id for doc_id in doc_ids if doc_id not in positive_ids]
        for pair in by_query[query]:
            pair.negatives = negatives


def bm25_top_docs_in_child(queries: list[str], folder: str, cache: str, depth: int, threads: int) -> list[list[str]]:
    """``bm25_top_docs`` in a fresh interpreter; request and answer travel as JSON files."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="splare-bm25-") as tmp:
        request, answer = Path(tmp) / "request.json", Path(tmp) / "hits.json"
        request.write_text(json.dumps({"queries": queries, "folder": folder, "cache": cache, "depth": depth,
                                       "threads": threads}), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "splare_pyserini.pairs", str(request), str(answer)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not answer.is_file():
            tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
            raise RuntimeError(f"BM25 negative mining for {folder} failed (exit {proc.returncode}):\n{tail}")
        return json.loads(answer.read_text(encoding="utf-8"))


def bm25_top_docs(queries: list[str], folder: str, cache: str, depth: int, threads: int) -> list[list[str]]:
    """BM25's top ``depth`` doc ids per query (Pyserini defaults), indexing the corpus once into ``cache``."""
    from .index import index_bm25, read_index_info
    from .search import open_searcher

    index = Path(cache) / f"bm25-{Path(folder).name}"
    if read_index_info(index) is None:
        index_bm25(Path(folder), index, threads=threads, overwrite=True)
    searcher = open_searcher(index, None, bm25=True)
    ids = [str(i) for i in range(len(queries))]
    results: list[list[str]] = []
    for start in range(0, len(queries), 512):
        batch_q, batch_ids = queries[start:start + 512], ids[start:start + 512]
        hits = searcher.batch_search(batch_q, batch_ids, depth, threads)
        results.extend([h.docid for h in hits[qid]] for qid in batch_ids)
    return results


def _child_main(request: str, answer: str) -> None:
    args = json.loads(Path(request).read_text(encoding="utf-8"))
    hits = bm25_top_docs(args["queries"], args["folder"], args["cache"], args["depth"], args["threads"])
    Path(answer).write_text(json.dumps(hits), encoding="utf-8")


if __name__ == "__main__":  # the child process of add_bm25_negatives
    import sys

    _child_main(sys.argv[1], sys.argv[2])
