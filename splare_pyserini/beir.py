"""End to end on a BEIR collection: encode -> impact index -> TREC run -> trec_eval.

Everything lands under ``--output``: ``vectors/``, ``index/``, ``run.splare.trec``,
``qrels.<split>.trec``, ``scores.json`` (and the BM25 baseline: ``bm25-index/``,
``run.bm25.trec``). Each stage is resumable and skipped when already complete;
each also runs alone (``encode``, ``index``, ``search``, ``evaluate`` modules).

    python -m splare_pyserini.beir --dataset scifact --output runs/scifact
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from .atomic import atomic_write
from .data import load_beir, resolve_beir_folder, write_trec_qrels
from .encode import add_encoder_args, build_encoder, encode_corpus, encode_queries
from .errors import cli_main
from .evaluate import evaluate_run
from .index import index_bm25, index_size_bytes, index_vectors, read_index_info


def mean_nonzeros(path: Path) -> float:
    """Mean number of terms per vector in a JsonVectorCollection file or folder."""
    total = count = 0
    for file in ([path] if path.is_file() else sorted(path.glob("*.jsonl"))):
        with open(file, encoding="utf-8") as handle:
            for line in handle:
                total += len(json.loads(line)["vector"])
                count += 1
    return total / max(count, 1)


def run_beir(dataset: str | Path, output: str | Path, encoder, split: str = "test", batch_size: int = 32,
             chunk_size: int = 1000, query_max_length: int = 128, query_topk: int | None = None, hits: int = 1000,
             threads: int = 1, search_batch_size: int = 1, bm25: bool = True) -> dict[str, dict]:
    """Run all stages for one SAE encoder (and BM25); returns {system: scores and costs}."""
    from .search import open_searcher, search_topics

    output = Path(output)
    data = load_beir(dataset, split, need_qrels=True)
    qrels_trec = write_trec_qrels(data.qrels, output / f"qrels.{split}.trec")
    results: dict[str, dict] = {}

    vectors = output / "vectors"
    started = time.time()
    summary = encode_corpus(data.corpus, vectors, encoder, batch_size, chunk_size=chunk_size, source=str(dataset))
    seconds = time.time() - started
    summary.skipped.update(sum((r.skipped for r in data.reports), Counter()))
    print(summary.line("corpus"), file=sys.stderr)
    qenc = encoder.with_options(max_length=query_max_length, topk=query_topk)
    print(encode_queries(data.queries, vectors, qenc, source=str(dataset)).line("queries"), file=sys.stderr)

    index = output / "index"
    if read_index_info(index) is None:
        index_vectors(vectors, index, threads=threads, overwrite=True)
    run = search_topics(open_searcher(index, str(vectors / "queries.jsonl")), vectors / "topics.tsv",
                        output / "run.splare.trec", hits, threads, search_batch_size)
    results["SPLARE"] = {**evaluate_run(data.qrels, run, qrels_trec),
                         "doc nnz": round(mean_nonzeros(vectors / "corpus"), 1),
                         "query nnz": round(mean_nonzeros(vectors / "queries.jsonl"), 1),
                         "index MB": round(index_size_bytes(index) / 1e6, 2)}
    if summary.reused_chunks == 0:
        results["SPLARE"]["encode docs/s"] = round(len(data.corpus) / seconds, 1)

    if bm25:
        bm25_index = output / "bm25-index"
        if read_index_info(bm25_index) is None:
            index_bm25(resolve_beir_folder(dataset), bm25_index, threads=threads, overwrite=True)
        bm25_run = search_topics(open_searcher(bm25_index, None, bm25=True), vectors / "topics.tsv",
                                 output / "run.bm25.trec", hits, threads, search_batch_size)
        results["BM25"] = {**evaluate_run(data.qrels, bm25_run, qrels_trec),
                           "index MB": round(index_size_bytes(bm25_index) / 1e6, 2)}
    with atomic_write(output / "scores.json") as out:
        json.dump({"dataset": str(dataset), "split": split, "encoder": encoder.info(), "results": results},
                  out, indent=2)
    return results


def format_table(dataset: str, results: dict[str, dict]) -> str:
    columns = ["nDCG@10", "R@100", "doc nnz", "query nnz", "index MB", "encode docs/s"]
    lines = [f"| {dataset} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for system, row in results.items():
        cells = [f"{row[c]:.4f}" if c in ("nDCG@10", "R@100") and c in row else str(row.get(c, "")) for c in columns]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splare_pyserini.beir", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact", help="BEIR folder, or a name (default: the shipped scifact)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size-search", type=int, default=1, help="queries per Lucene batch")
    parser.add_argument("--no-bm25", action="store_true", help="skip the BM25 baseline")
    add_encoder_args(parser)
    args = parser.parse_args(argv)
    results = run_beir(args.dataset, args.output, build_encoder(args), args.split, args.batch_size, args.chunk_size,
                       args.query_max_length, args.query_topk, args.hits, args.threads, args.batch_size_search,
                       not args.no_bm25)
    print(format_table(Path(args.dataset).name, results))


if __name__ == "__main__":
    cli_main(main)()
