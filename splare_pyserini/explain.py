"""Explain a hit: Lucene's score as a sum of latent contributions, each with its label and firing tokens.

    python -m splare_pyserini.explain --index indexes/scifact-splare --query "..." --hits 3
    python -m splare_pyserini.explain --index indexes/scifact-splare --query "..." --docid 4983 --json
    python -m splare_pyserini.explain --index indexes/scifact-splare --query "..." --hits 5 --html hits.html

For an impact index Lucene's score is the sum, over the query's terms that the searcher sent to Lucene,
of query impact x document impact (Anserini's ``ImpactSimilarity``). The query impacts are those the
searcher's query encoder produced; the document impacts are read from the index's postings (the index
is the source of truth). All are integers, so the contributions sum to an integer, compared with
``==`` to the float Lucene returned. Pyserini's ``LuceneImpactSearcher`` leaves out query terms whose
idf is not above its ``min_idf`` (0: terms in every document, or in none); they are listed as dropped.

Each contribution names its latent's label (``latent_labels.json`` stored with the model, see
``label_latents``; the term itself for the vocabulary twin) and the query and document tokens whose
activation set the pooled weight (the argmax token), found by re-running the encoder on the query and
on the document's text (from the encoded vectors the index was built from, or ``--corpus``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

from .config import check_fields, option, parse_config, require
from .datasets import iter_json_lines, read_jsonl, resolve_beir_folder
from .errors import ArtifactError, InputError, cli_main
from .model.settings import VOCABULARY_PROJECTIONS, EncoderSettings

log = logging.getLogger(__name__)
FLOAT32_EXACT = 2 ** 24  # integers up to this are exact in a float32 score


@dataclass
class Contribution:
    """One shared latent: query impact x document impact, with what fired it on each side."""
    latent: int
    term: str
    label: str | None
    query_impact: int
    doc_impact: int
    query_token: str | None = None
    doc_token: str | None = None
    query_span: tuple[int, int] | None = None  # character span of the query token in the query
    doc_span: tuple[int, int] | None = None  # character span of the document token in the document text

    @property
    def contribution(self) -> int:
        return self.query_impact * self.doc_impact

    def to_json(self) -> dict:
        return {"latent": self.latent, "term": self.term, "label": self.label, "contribution": self.contribution,
                "query_impact": self.query_impact, "doc_impact": self.doc_impact,
                "query_token": self.query_token, "doc_token": self.doc_token}


@dataclass
class HitExplanation:
    """A hit's score and its decomposition, largest contribution first."""
    query: str
    docid: str
    score: float  # what Lucene returned for (query, docid)
    rank: int | None  # 1-based rank in the searched depth; None when the document was not among them
    contributions: list[Contribution]
    lucene_explain: float | None = None  # Lucene's IndexSearcher.explain value, an independent check
    dropped_terms: list[str] = field(default_factory=list)  # query terms the searcher did not send to Lucene
    doc_text: str | None = None
    vocabulary: bool = False

    @property
    def total(self) -> int:
        return sum(c.contribution for c in self.contributions)

    @property
    def exact(self) -> bool:
        return float(self.total) == self.score

    def to_json(self) -> dict:
        return {"docid": self.docid, "score": self.score, "rank": self.rank, "sum": self.total,
                "exact": self.exact, "query": self.query, "dropped_query_terms": self.dropped_terms,
                "contributions": [c.to_json() for c in self.contributions]}


def settings_from_info(info: dict, model: str | None = None) -> EncoderSettings:
    """The encoder settings an index records (``model`` replaces the model's path, same content)."""
    names = {f.name for f in fields(EncoderSettings)}
    values = {k: v for k, v in info.items() if k in names}
    if model:
        values["model"] = model
    return EncoderSettings(**values)


def _read_texts(source: Path, wanted: set[str]) -> dict[str, str]:
    """{docid: text} for ``wanted`` ids from a JSONL file, a folder of vector files (``contents``) or a
    BEIR folder (title + text, as encoded)."""
    if source.is_dir() and (source / "corpus.jsonl").is_file():
        return {r.id: r.text for r in read_jsonl(source / "corpus.jsonl") if r.id in wanted}
    files = sorted(source.glob("*.jsonl")) if source.is_dir() else [source]
    if source.is_dir() and (source / "corpus").is_dir():
        files = sorted((source / "corpus").glob("*.jsonl"))
    found: dict[str, str] = {}
    for file in files:
        for _, obj in iter_json_lines(file):
            ident = str(obj.get("id", obj.get("_id", obj.get("docid", ""))))
            if ident in wanted:
                if "vector" in obj and isinstance(obj.get("contents"), str):
                    found[ident] = obj["contents"]
                else:
                    found[ident] = " ".join(p.strip() for p in (obj.get("title"), obj.get("text") or
                                                                obj.get("contents")) if p and p.strip())
    return found


class Explainer:
    """Explains hits of one impact index (opened by path, or a ``LuceneImpactSearcher`` whose query encoder
    is a ``SaeQueryEncoder``). ``labels``: "auto" (stored with the model), "none", a path, or ``LatentLabels``;
    ``corpus``: where document texts are (default: the encoded vectors the index was built from)."""

    def __init__(self, searcher_or_index, encoder=None, labels="auto", corpus: str | Path | None = None,
                 model: str | None = None, device: str = "cpu"):
        from .lucene.index import read_index_info
        from .lucene.search import SaeQueryEncoder, open_searcher

        if isinstance(searcher_or_index, (str, Path)):
            index = Path(searcher_or_index)
            if not index.is_dir():
                raise InputError(f"--index {index}: no such index folder")
            self.index_info = read_index_info(index) or {}
            info = self.index_info.get("encoder")
            if not info:
                raise ArtifactError(f"{index} records no encoder settings (not an index made by splare_pyserini)")
            if encoder is None:
                from .model.encoder import SaeSparseEncoder

                encoder = SaeSparseEncoder(settings_from_info(info, model), device=device)
            self.searcher = open_searcher(index, encoder)  # refuses an encoder made with other settings
        else:
            self.searcher = searcher_or_index
            query_encoder = getattr(self.searcher, "query_encoder", None)
            if not isinstance(query_encoder, SaeQueryEncoder):
                raise InputError("explain needs a LuceneImpactSearcher whose query encoder is a SaeQueryEncoder "
                                 "(open it with splare_pyserini.open_searcher(index, encoder))")
            encoder = encoder or query_encoder.encoder
            index = Path(getattr(self.searcher, "index_dir", "") or ".")
            self.index_info = read_index_info(index) or {}
        self.index = index
        self.encoder = encoder
        self.info = self.index_info.get("encoder") or encoder.info()
        self.labels = self._labels(labels)
        self.corpus = corpus
        self._texts: dict[str, str] = {}

    def _labels(self, labels):
        from .model.labels import LatentLabels, check_labels, find_labels, read_labels, vocab_labels

        if labels is None or labels is False or labels == "none":
            return None
        if isinstance(labels, LatentLabels):
            check_labels(labels, self.info, f"index {self.index}")
            return labels
        if self.encoder.settings.sae in VOCABULARY_PROJECTIONS:
            return vocab_labels(self.encoder.tokenizer, self.encoder.dim)
        if labels == "auto":
            found = find_labels(self.info)
            if found is None:
                log.info("no latent labels stored with model %s (python -m splare_pyserini.label_latents makes "
                         "them); latents are shown by id", self.info.get("model"))
            return found
        loaded = read_labels(labels)
        check_labels(loaded, self.info, f"index {self.index}")
        return loaded

    # --- document texts ----------------------------------------------------------------------------
    def _text_sources(self) -> list[Path]:
        sources = []
        if self.corpus is not None:
            path = Path(self.corpus)
            if not path.exists():
                path = resolve_beir_folder(str(self.corpus))  # a BEIR name; a one-line error if unknown
            return [path]
        if self.index_info.get("vectors"):
            sources.append(Path(self.index_info["vectors"]))
        source = ((self.info or {}).get("corpus") or {}).get("source")
        if source:
            try:
                sources.append(resolve_beir_folder(source))
            except InputError:
                pass
        return [s for s in sources if s.exists()]

    def doc_texts(self, docids: list[str]) -> dict[str, str]:
        missing = {d for d in docids if d not in self._texts}
        for source in self._text_sources() if missing else []:
            self._texts.update(_read_texts(source, missing))
            missing -= set(self._texts)
            if not missing:
                break
        if missing:
            log.warning("no text for document(s) %s (pass --corpus): their argmax tokens are not shown",
                        ", ".join(sorted(missing)[:5]))
        return {d: self._texts[d] for d in docids if d in self._texts}

    # --- explanations --------------------------------------------------------------------------------
    def search(self, query: str, k: int):
        return self.searcher.search(query, k)

    def explain(self, query: str, docid: str, depth: int = 1000) -> HitExplanation:
        """Explain ``docid`` for ``query``; its score and rank come from a search of ``depth`` hits (beyond
        them, the score is Lucene's explain value)."""
        from .lucene.documents import lucene_docid

        docid = str(docid)
        if lucene_docid(self.searcher, docid) is None:
            raise InputError(f"--docid {docid}: no such document in index {self.index}")
        hits = self.search(query, depth)
        for rank, hit in enumerate(hits, 1):
            if hit.docid == docid:
                return self.explain_hits(query, [(docid, float(hit.score), rank)])[0]
        return self.explain_hits(query, [(docid, None, None)])[0]

    def top_hits(self, query: str, k: int) -> list[HitExplanation]:
        return self.explain_hits(query, [(h.docid, float(h.score), r) for r, h in enumerate(self.search(query, k), 1)])

    def explain_hits(self, query: str, hits: list[tuple[str, float | None, int | None]]) -> list[HitExplanation]:
        from .lucene.documents import document_impacts, explain_score, lucene_docid
        from .model.attribution import text_activations

        encoder, prefix = self.encoder, self.encoder.settings.prefix
        vector = self.searcher.encode(query) if hasattr(self.searcher, "encode") else \
            self.searcher.query_encoder.encode(query)
        idf, min_idf = getattr(self.searcher, "idf", None), getattr(self.searcher, "min_idf", 0)
        sent = {t: int(w) for t, w in vector.items() if idf is None or (t in idf and idf[t] > min_idf)}
        dropped = sorted((t for t in vector if t not in sent), key=lambda t: (-vector[t], t))
        query_acts = text_activations(encoder, [query], query=True)[0]
        texts = self.doc_texts([d for d, _, _ in hits])
        out = []
        for docid, score, rank in hits:
            internal = lucene_docid(self.searcher, docid)
            if internal is None:
                raise InputError(f"--docid {docid}: no such document in index {self.index}")
            impacts = document_impacts(self.searcher, internal, sent)
            lucene_value = explain_score(self.searcher, sent, internal)
            doc_acts = text_activations(encoder, [texts[docid]])[0] if docid in texts else None
            contributions = []
            for term, doc_impact in impacts.items():
                latent = int(term[len(prefix):]) if term.startswith(prefix) and term[len(prefix):].isdigit() else -1
                c = Contribution(latent, term, self.labels.label(latent) if self.labels else None, sent[term],
                                 doc_impact)
                q_pos = query_acts.argmax_token(latent)
                c.query_token, c.query_span = query_acts.token_text(q_pos), \
                    (query_acts.spans[q_pos] if q_pos is not None else None)
                if doc_acts is not None:
                    d_pos = doc_acts.argmax_token(latent)
                    c.doc_token, c.doc_span = doc_acts.token_text(d_pos), \
                        (doc_acts.spans[d_pos] if d_pos is not None else None)
                contributions.append(c)
            contributions.sort(key=lambda c: (-c.contribution, c.latent))
            explanation = HitExplanation(query_acts.text, docid, lucene_value if score is None else score, rank,
                                         contributions, lucene_value, dropped, texts.get(docid),
                                         encoder.settings.sae in VOCABULARY_PROJECTIONS)
            if not explanation.exact:
                log.warning("docid %s: contributions sum to %d, Lucene scored %r%s", docid, explanation.total,
                            explanation.score, " (beyond 2^24 float32 rounds integers)"
                            if explanation.total > FLOAT32_EXACT else "")
            out.append(explanation)
        return out


def explain(searcher_or_index, query: str, docid: str, **kwargs) -> HitExplanation:
    """Explain why ``docid`` scored what it did for ``query`` (see :class:`Explainer` for the options)."""
    depth = kwargs.pop("depth", 1000)
    return Explainer(searcher_or_index, **kwargs).explain(query, docid, depth)


def format_text(explanation: HitExplanation, top: int = 10) -> str:
    """The plain-text report of one hit: score, exact sum, and the top contributions."""
    e = explanation
    rank = f"rank {e.rank}" if e.rank else "not in the searched hits"
    check = "exactly" if e.exact else f"NOT exactly (sum {e.total})"
    lines = [f"docid {e.docid} ({rank}): Lucene score {e.score:g} = sum of {len(e.contributions)} latent "
             f"contributions, {check}"]
    if e.dropped_terms:
        lines.append(f"  ({len(e.dropped_terms)} query term(s) not sent to Lucene by Pyserini: idf <= min_idf)")
    header = f"  {'contribution':>12}  {'q x d':>11}  {'share':>6}  {'latent':<8}  {'label':<32}  query token -> doc token"
    lines.append(header)
    for c in e.contributions[:top]:
        share = c.contribution / e.total if e.total else 0.0
        label = (c.label or "")[:32]
        lines.append(f"  {c.contribution:>12,}  {f'{c.query_impact}x{c.doc_impact}':>11}  {share:>6.1%}  "
                     f"{c.term:<8}  {label:<32}  {c.query_token!r} -> {c.doc_token!r}")
    if len(e.contributions) > top:
        rest = sum(c.contribution for c in e.contributions[top:])
        lines.append(f"  {rest:>12,}  ... {len(e.contributions) - top} more latents")
    return "\n".join(lines)


@dataclass(frozen=True)
class ExplainConfig:
    index: str = option(help="impact index made by splare_pyserini (its encoder settings are read from it)")
    query: str = option(help="query text")
    docid: str | None = option(None, "explain this document")
    hits: int | None = option(None, "explain the top N hits")
    json: bool = option(False, "print one JSON object per hit (docid, score, contributions, ...)")
    html: str | None = option(None, "also write a self-contained HTML page here")
    top: int = option(10, "contributions shown per hit in text and HTML (JSON has all)")
    labels: str = option("auto", "latent labels: 'auto' (stored with the model), 'none', or a labels file")
    corpus: str | None = option(None, "document texts (BEIR folder or name, JSONL, or encode output); default: "
                                      "the vectors the index was built from")
    depth: int = option(1000, "hits searched to find a --docid's rank and score")
    model: str | None = option(None, "the index's model at another path (checked by content hash)")
    device: str = option("cpu", "torch device")

    def __post_init__(self) -> None:
        check_fields(self)
        require((self.docid is None) != (self.hits is None), "give either --docid or --hits N")
        require(self.hits is None or self.hits >= 1, f"hits: must be >= 1, got {self.hits}")
        require(self.top >= 1 and self.depth >= 1, "top and depth: must be >= 1")
        require(bool(self.query.strip()), "query: empty")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ExplainConfig, argv, "python -m splare_pyserini.explain", __doc__)
    explainer = Explainer(cfg.index, labels=cfg.labels, corpus=cfg.corpus, model=cfg.model, device=cfg.device)
    results = [explainer.explain(cfg.query, cfg.docid, cfg.depth)] if cfg.docid is not None else \
        explainer.top_hits(cfg.query, cfg.hits)
    if not results:
        log.info("no hits for the query")
    for result in results:
        print(json.dumps(result.to_json(), ensure_ascii=False) if cfg.json else format_text(result, cfg.top) + "\n")
    if cfg.html:
        from .explain_html import write_html

        log.info("wrote %s", write_html(results, cfg.html, top=cfg.top))


cli = cli_main(main)

if __name__ == "__main__":
    cli()
