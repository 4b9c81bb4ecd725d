"""Search Lucene impact indexes with SAE-latent queries and write TREC run files.

Two equivalent paths (they give identical runs):
(a) pre-encoded queries with Pyserini's own CLI, through ``python -m splare_pyserini.pyserini``;
(b) :class:`SaeQueryEncoder` plugged into Pyserini's ``LuceneImpactSearcher``, which encodes each
    query on the fly (this module's CLI).

    python -m splare_pyserini.search --index indexes/scifact-splare --topics encode/scifact/topics.tsv \\
        --output runs/scifact-splare.trec --hits 1000
    # the hybrid: SPLARE and BM25 fused per query (CombSUM; --fusion rrf), as beir's third row
    python -m splare_pyserini.search --index indexes/scifact-splare --bm25-index indexes/scifact-bm25 \\
        --topics encode/scifact/topics.tsv --output runs/scifact-hybrid.trec --hits 1000

This module reads topics itself (``qid<TAB>text``), never through Pyserini's ``get_query_iterator``,
which picks a reader by substrings of the path (a file under a folder named ``cacm`` reads as CACM).
Path (a) is Pyserini's own CLI and does use it: keep its ``--topics`` path free of collection names.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from ..config import check_fields, option, parse_config, require
from ..datasets import TextRecord, join_text, read_tsv_topics
from ..errors import ArtifactError, InputError, cli_main
from ..io import tmp_name
from ..model.settings import INFO_FILE, EncoderSettings, settings_diff
from .fusion import FusionSettings
from .index import read_index_info
from .jvm import import_pyserini

log = logging.getLogger(__name__)
MIN_IDF_HELP = ("search only query terms whose idf in the index, ln(N / df), is above this (Pyserini's "
                "--min-idf; 0: all but terms in every document)")


class SaeQueryEncoder:
    """Pyserini query encoder: text -> {"L1234": impact} with the same code as the corpus.

    It has the interface of ``pyserini.encode.QueryEncoder`` (``encode(text)``, ``has_model``)
    without subclassing it: importing ``pyserini.encode`` boots a JVM, and this class must be
    usable (e.g. in a training process) without one. ``LuceneImpactSearcher`` calls ``encode``.
    """

    has_model = True
    has_encoded_query = False

    def __init__(self, encoder=None, **settings):
        from ..model.encoder import SaeSparseEncoder

        self.encoder = encoder if encoder is not None else SaeSparseEncoder(**settings)

    def encode(self, text: str, **kwargs) -> dict[str, int]:
        return self.encoder.encode_queries([text])[0]

    def info(self) -> dict:
        return self.encoder.info()


class SaeDocumentEncoder:
    """Pyserini document encoder (the ``DocumentEncoder.encode(texts, titles=None)`` interface):
    a title is prepended to its text, as the BEIR readers join them."""

    def __init__(self, encoder=None, **settings):
        from ..model.encoder import SaeSparseEncoder

        self.encoder = encoder if encoder is not None else SaeSparseEncoder(**settings)

    def encode(self, texts: Sequence[str], titles: Sequence[str] | None = None, batch_size: int = 32,
               **kwargs) -> list[dict[str, int]]:
        if titles is not None:
            texts = [join_text(t, x) for t, x in zip(titles, texts)]
        return self.encoder.encode_documents(list(texts), batch_size=batch_size)


def check_compatible(index: str | Path, query_info: dict | None) -> None:
    """Refuse query vectors made with settings other than the indexed documents' (model and SAE
    compared by content hash, so the same model at another path passes)."""
    info = read_index_info(index)
    doc_info = (info or {}).get("encoder")
    if not doc_info or not query_info:  # e.g. vectors encoded by another tool: nothing to compare
        log.warning("settings not checked: %s records no encoder settings",
                    f"index {index}" if not doc_info else "the queries")
        return
    diff = settings_diff(doc_info, query_info)
    if diff:
        raise ArtifactError(f"queries and index {index} were encoded with different settings: "
                            + ", ".join(f"{k}: query {query_info[k]!r} vs documents {doc_info[k]!r}" for k in diff))


def _require_index(index: str | Path, flag: str = "--index") -> str:
    if not Path(index).is_dir():
        raise InputError(f"{flag} {index}: no such index folder")
    return str(index)


def open_searcher(index: str | Path, query_encoder, min_idf: float = 0.0):
    """A ``LuceneImpactSearcher`` over an impact index, after checking that the queries' settings
    match the index's: ``query_encoder`` is a :class:`SaeQueryEncoder`, a ``SaeSparseEncoder``, or
    the path of a ``queries.jsonl`` written by ``encode`` (its ``encode_info.json`` is checked).

    ``min_idf`` is Pyserini's: a query term is searched only if its idf in the index, ln(N / df), is
    above it. At 0 (Pyserini's default) only terms in every document, or in none, are left out; a
    latent held by most documents ranks little and costs the longest postings Lucene walks."""
    from ..model.encoder import SaeSparseEncoder

    index = _require_index(index)
    if isinstance(query_encoder, SaeSparseEncoder):
        query_encoder = SaeQueryEncoder(query_encoder)
    if isinstance(query_encoder, (str, Path)):
        path = Path(query_encoder)
        if not path.is_file():
            raise InputError(f"--encoded-queries {path}: no such file")
        info_path = path.parent / INFO_FILE
        check_compatible(index, json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else None)
        query_encoder = str(path)
    else:
        check_compatible(index, query_encoder.info())
    lucene = import_pyserini("pyserini.search.lucene")
    return lucene.LuceneImpactSearcher(index, query_encoder, min_idf=min_idf)


def bm25_language(index: str | Path) -> str:
    """The analyzer language a BM25 index was built with (indexes of older versions: English)."""
    return (read_index_info(index) or {}).get("language", "en")


def open_bm25_searcher(index: str | Path, language: str | None = None):
    """A ``LuceneSearcher`` with Anserini's BM25 defaults (k1=0.9, b=0.4) over a bag-of-words index; queries
    are analyzed as the index was (its recorded language), unless ``language`` says otherwise."""
    index = _require_index(index)  # before the JVM boots: a missing folder is a one-line error at once
    lucene = import_pyserini("pyserini.search.lucene")
    searcher = lucene.LuceneSearcher(index)
    language = language or bm25_language(index)
    if language != "en":  # English is the searcher's default analyzer
        searcher.set_language(language)
    return searcher


def search_topics(searcher, topics: str | Path | Sequence[TextRecord], output: str | Path, hits: int = 1000,
                  threads: int = 1, batch_size: int = 1, remove_query: bool = False) -> Path:
    """Search every topic and write a TREC run, in Pyserini's CLI order and format (tag ``Anserini``)."""
    queries = read_tsv_topics(topics) if isinstance(topics, (str, Path)) else list(topics)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    writers = import_pyserini("pyserini.output_writer")
    tmp = tmp_name(output)
    writer = writers.get_output_writer(str(tmp), writers.OutputFormat.TREC, "w", max_hits=hits, tag="Anserini",
                                       topics=None, use_max_passage=False)
    step = max(batch_size, 1)
    try:
        with writer, tqdm(total=len(queries), desc="search", unit="query", dynamic_ncols=True) as bar:
            for start in range(0, len(queries), step):
                batch = queries[start:start + step]
                if step == 1 and threads <= 1:
                    results = {batch[0].id: searcher.search(batch[0].text, hits)}
                else:
                    results = searcher.batch_search([q.text for q in batch], [q.id for q in batch], hits, threads)
                for query in batch:
                    found = results[query.id]
                    if remove_query:
                        found = [h for h in found if h.docid != query.id]
                    writer.write(query.id, found)
                bar.update(len(batch))
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    return output


@dataclass(frozen=True)
class SearchConfig:
    index: str = option(help="impact index (or a BM25 index with --bm25)")
    topics: str = option(help="qid<TAB>text file (encode writes topics.tsv)")
    output: str = option(help="TREC run file to write")
    hits: int = option(1000, "hits per query")
    threads: int = option(1, "search threads (with --batch-size > 1)")
    batch_size: int = option(1, "queries per Lucene batch")
    encoded_queries: str | None = option(None, "queries.jsonl from encode, instead of encoding on the fly")
    bm25: bool = option(False, "plain BM25 on a bag-of-words index")
    remove_query: bool = option(False, "drop hits whose docid equals the query id")
    min_idf: float = option(0.0, MIN_IDF_HELP)
    bm25_index: str | None = option(None, "a BM25 index of the same corpus: search it too and write the two "
                                          "systems fused (--fusion), the hybrid of beir's third row")
    device: str = option("cpu", "torch device of the query encoder")
    fusion: FusionSettings = field(default_factory=FusionSettings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("hits", "threads", "batch_size"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        require(self.min_idf >= 0, f"min_idf: must be >= 0, got {self.min_idf}")
        require(not (self.bm25 and self.min_idf), "min_idf: impact search only (not with --bm25)")
        require(not (self.bm25 and self.bm25_index), "bm25_index: fuses an impact --index with BM25 (not with --bm25)")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(SearchConfig, argv, "python -m splare_pyserini.search", __doc__)
    if cfg.bm25_index:  # before any model loads
        _require_index(cfg.bm25_index, "--bm25-index")
    if cfg.bm25:
        searcher = open_bm25_searcher(cfg.index)
    elif cfg.encoded_queries:
        searcher = open_searcher(cfg.index, cfg.encoded_queries, cfg.min_idf)
    else:
        _require_index(cfg.index)
        from ..model.encoder import SaeSparseEncoder

        searcher = open_searcher(cfg.index, SaeSparseEncoder(cfg.encoder, device=cfg.device), cfg.min_idf)
    if cfg.bm25_index:
        from .hybrid import HybridSearcher

        searcher = HybridSearcher(searcher, open_bm25_searcher(cfg.bm25_index), cfg.fusion.fusion,
                                  cfg.fusion.fusion_alpha, depth=max(cfg.hits, 1000))
    run = search_topics(searcher, cfg.topics, cfg.output, cfg.hits, cfg.threads, cfg.batch_size, cfg.remove_query)
    log.info("wrote %s", run)


cli = cli_main(main)

if __name__ == "__main__":
    cli()
