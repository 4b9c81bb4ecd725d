"""Search Lucene impact indexes with SAE-latent queries and write TREC run files.

Two equivalent paths (they give identical runs):
(a) pre-encoded queries with Pyserini's own CLI, through ``python -m splare_pyserini.pyserini``;
(b) :class:`SaeQueryEncoder`, a ``pyserini.encode.QueryEncoder`` plugged into
    ``LuceneImpactSearcher``, which encodes each query on the fly (this module's CLI).

    python -m splare_pyserini.search --index indexes/scifact-splare --topics encode/scifact/topics.tsv \
        --output runs/scifact-splare.trec --hits 1000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from .atomic import tmp_name
from .encode import add_encoder_args, build_encoder, normalize_query, query_view
from .encoder import EncoderSettings, SaeSparseEncoder
from .errors import ArtifactError, InputError, cli_main
from .index import read_index_info
from .java import import_pyserini_encode

_pyserini_encode = import_pyserini_encode()  # boots the JVM with the right runtime first

from pyserini.output_writer import OutputFormat, get_output_writer  # noqa: E402
from pyserini.query_iterator import TopicsFormat, get_query_iterator  # noqa: E402
from pyserini.search.lucene import LuceneImpactSearcher, LuceneSearcher  # noqa: E402


class SaeQueryEncoder(_pyserini_encode.QueryEncoder):
    """Pyserini query encoder: text -> {"L1234": impact} with the same code as the corpus."""

    def __init__(self, encoder: SaeSparseEncoder | None = None, **settings):
        super().__init__()
        self.encoder = encoder if encoder is not None else SaeSparseEncoder(EncoderSettings(**settings))
        self.has_model = True

    def encode(self, text: str, **kwargs) -> dict[str, int]:
        vectors, _ = self.encoder.encode_sorted([normalize_query(text)], batch_size=1)
        return vectors[0]


def check_compatible(index: str | Path, query_info: dict | None) -> None:
    """Refuse query vectors made with settings other than the indexed documents'."""
    info = read_index_info(index)
    doc_info = (info or {}).get("encoder")
    if not doc_info or not query_info:
        return
    keys = set(EncoderSettings().fingerprint()) | {"d_sae"}
    diff = sorted(k for k in keys if k in doc_info and k in query_info and doc_info[k] != query_info[k])
    if diff:
        raise ArtifactError(f"queries and index {index} were encoded with different settings: "
                            + ", ".join(f"{k}: query {query_info[k]!r} vs documents {doc_info[k]!r}" for k in diff))


def open_searcher(index: str | Path, query_encoder: SaeQueryEncoder | str | None, bm25: bool = False):
    index = str(index)
    if not Path(index).is_dir():
        raise InputError(f"--index {index}: no such index folder")
    if bm25:
        return LuceneSearcher(index)  # Anserini's BM25 defaults (k1=0.9, b=0.4)
    return LuceneImpactSearcher(index, query_encoder)


def search_topics(searcher, topics: str | Path, output: str | Path, hits: int = 1000, threads: int = 1,
                  batch_size: int = 1, remove_query: bool = False) -> Path:
    """Search every topic and write a TREC run, in Pyserini's CLI order and format (tag ``Anserini``)."""
    topics, output = str(topics), Path(output)
    if not Path(topics).is_file():
        raise InputError(f"--topics {topics}: no such file")
    query_iterator = get_query_iterator(topics, TopicsFormat.DEFAULT)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(output)
    writer = get_output_writer(str(tmp), OutputFormat.TREC, "w", max_hits=hits, tag="Anserini",
                               topics=query_iterator.topics, use_max_passage=False)
    queries = [(str(qid), text) for qid, text in query_iterator]
    step = max(batch_size, 1)
    try:
        with writer, tqdm(total=len(queries), desc="search", unit="query") as bar:
            for start in range(0, len(queries), step):
                batch = queries[start:start + step]
                if step == 1 and threads <= 1:
                    results = {batch[0][0]: searcher.search(batch[0][1], hits)}
                else:
                    results = searcher.batch_search([t for _, t in batch], [q for q, _ in batch], hits, threads)
                for qid, _ in batch:
                    found = results[qid]
                    if remove_query:
                        found = [h for h in found if h.docid != qid]
                    writer.write(qid, found)
                bar.update(len(batch))
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splare_pyserini.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--topics", required=True, help="qid<TAB>text file (encode writes topics.tsv)")
    parser.add_argument("--output", required=True, help="TREC run file to write")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--encoded-queries", default=None,
                        help="queries.jsonl from encode, instead of encoding on the fly")
    parser.add_argument("--bm25", action="store_true", help="plain BM25 on a bag-of-words index")
    parser.add_argument("--remove-query", action="store_true", help="drop hits whose docid equals the query id")
    add_encoder_args(parser)
    args = parser.parse_args(argv)
    if args.bm25:
        searcher = open_searcher(args.index, None, bm25=True)
    elif args.encoded_queries:
        if not Path(args.encoded_queries).is_file():
            raise InputError(f"--encoded-queries {args.encoded_queries}: no such file")
        info_path = Path(args.encoded_queries).parent / "encode_info.json"
        if info_path.is_file():
            check_compatible(args.index, json.loads(info_path.read_text()))
        searcher = open_searcher(args.index, args.encoded_queries)
    else:
        encoder = query_view(build_encoder(args), args)
        check_compatible(args.index, encoder.info())
        searcher = open_searcher(args.index, SaeQueryEncoder(encoder))
    run = search_topics(searcher, args.topics, args.output, args.hits, args.threads, args.batch_size,
                        args.remove_query)
    print(f"wrote {run}", file=sys.stderr)


if __name__ == "__main__":
    cli_main(main)()
