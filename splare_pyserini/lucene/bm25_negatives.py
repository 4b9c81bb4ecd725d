"""BM25 hard negatives for training, mined in a child interpreter.

A JVM booted inside the training process crashed it (SIGSEGV in libtorch under the JVM's signal
handlers, seen mid-training), so training keeps the JVM out of its own address space: the search
runs in ``python -m splare_pyserini.lucene.bm25_negatives`` (not a multiprocessing spawn, which
would re-run a user's script that lacks a main guard); request and answer travel as JSON files.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from ..child import run_child
from ..errors import ArtifactError


def bm25_top_docs_in_child(queries: list[str], folder: str, cache: str, depth: int,
                           threads: int = 2) -> list[list[str]]:
    """:func:`bm25_top_docs` in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="splare-bm25-") as tmp:
        request, answer = Path(tmp) / "request.json", Path(tmp) / "hits.json"
        request.write_text(json.dumps({"queries": queries, "folder": folder, "cache": cache, "depth": depth,
                                       "threads": threads}), encoding="utf-8")
        proc = run_child(__name__, [str(request), str(answer)], capture_output=True)  # ends with this process
        if proc.returncode != 0 or not answer.is_file():
            tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
            raise ArtifactError(f"BM25 negative mining for {folder} failed (exit {proc.returncode}): {tail}")
        return json.loads(answer.read_text(encoding="utf-8"))


def bm25_top_docs(queries: list[str], folder: str, cache: str, depth: int, threads: int = 2) -> list[list[str]]:
    """BM25's top ``depth`` doc ids per query (Pyserini defaults), indexing the corpus once into ``cache``."""
    from .index import index_bm25, read_index_info
    from .search import open_bm25_searcher

    index = Path(cache) / f"bm25-{Path(folder).name}"
    if read_index_info(index) is None:
        index_bm25(Path(folder), index, threads=threads, overwrite=True)
    searcher = open_bm25_searcher(index)
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


if __name__ == "__main__":  # the child process of bm25_top_docs_in_child
    _child_main(sys.argv[1], sys.argv[2])
