"""A document's impacts as the impact index stores them, and Lucene's own explanation of a score.

An impact index (``-impact -pretokenized``) stores each latent's impact as the term frequency of its
pseudo-term in the ``contents`` field; Anserini's ``ImpactSimilarity`` scores a term as
query weight x frequency. Anserini keeps neither term vectors nor the raw document for a
``JsonVectorCollection`` by default (Pyserini's ``get_document_vector`` and ``doc_raw`` return
nothing), so impacts are read from the postings: one ``seekExact`` + ``advance`` per term.
"""
from __future__ import annotations

from typing import Iterable

from .jvm import autoclass

FIELD = "contents"  # Anserini's Constants.CONTENTS


def _reader(searcher_or_reader):
    """The Lucene ``IndexReader`` behind a ``LuceneImpactSearcher``, an Anserini searcher or a reader."""
    if hasattr(searcher_or_reader, "maxDoc"):
        return searcher_or_reader
    inner = getattr(getattr(searcher_or_reader, "object", None), "reader", None)
    if inner is not None and hasattr(inner, "maxDoc"):
        return inner
    return searcher_or_reader.reader  # Pyserini's LuceneIndexReader


def lucene_docid(searcher_or_reader, docid: str) -> int | None:
    """The internal Lucene id of collection ``docid``, or None if the index does not hold it."""
    utils = autoclass("io.anserini.index.IndexReaderUtils")
    internal = utils.convertDocidToLuceneDocid(_reader(searcher_or_reader), str(docid))
    return None if internal is None or internal < 0 else int(internal)


def document_impacts(searcher_or_reader, internal_docid: int, terms: Iterable[str] | None = None) -> dict[str, int]:
    """{term: impact} of one document (by internal Lucene id) for ``terms``, from the postings; every
    term of the field when ``terms`` is None (the document's whole stored vector). Zeros are left out."""
    reader = _reader(searcher_or_reader)
    postings_flags = autoclass("org.apache.lucene.index.PostingsEnum").FREQS
    field_terms = autoclass("org.apache.lucene.index.MultiTerms").getTerms(reader, FIELD)
    if field_terms is None:
        return {}
    term_cls = autoclass("org.apache.lucene.index.Term")
    out: dict[str, int] = {}
    iterator = field_terms.iterator()
    if terms is None:
        candidates = []
        ref = iterator.next()
        while ref is not None:
            candidates.append(ref.utf8ToString())
            ref = iterator.next()
    else:
        candidates = list(terms)
    for term in candidates:
        if not iterator.seekExact(term_cls(FIELD, term).bytes()):
            continue
        postings = iterator.postings(None, postings_flags)
        if postings.advance(internal_docid) == internal_docid:
            out[term] = int(postings.freq())
    return out


def explain_score(searcher, query_weights: dict[str, int], internal_docid: int) -> float:
    """Lucene's ``IndexSearcher.explain`` value of a weighted term query (each term boosted by its query
    weight, Anserini's impact query) for one document: Lucene's score, recomputed by Lucene."""
    import jnius

    builder = autoclass("org.apache.lucene.search.BooleanQuery$Builder")()
    term_query, term = autoclass("org.apache.lucene.search.TermQuery"), autoclass("org.apache.lucene.index.Term")
    boost, should = autoclass("org.apache.lucene.search.BoostQuery"), \
        autoclass("org.apache.lucene.search.BooleanClause$Occur").SHOULD
    for token, weight in query_weights.items():
        builder.add(boost(term_query(term(FIELD, token)), float(weight)), should)
    query = jnius.cast("org.apache.lucene.search.Query", builder.build())
    obj = getattr(searcher, "object", searcher)
    return float(obj.searcher.explain(query, int(internal_docid)).getValue().floatValue())
