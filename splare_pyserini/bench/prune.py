"""Choose a model's top-k (latents kept per document and per query) and Pyserini's ``--min-idf`` by
measurement, never on test.

The corpus and the split's queries are encoded once, unpruned; each document k is an index of the
vectors cut to their k largest impacts, each query k a file of cut queries, and every pair is run
and scored. Cutting integer impacts keeps what cutting the float weights keeps except at ties
between equal impacts (broken here by latent id): close enough to choose a k, and the chosen k's
final figure comes from the encoder itself (``--topk``/``--query-topk``, or a model trained with them).
Each pair is also searched at every ``--min-idfs`` value: Pyserini's impact searcher leaves out the query
terms whose idf in the index, ln(N / df), is not above it, and a latent that most documents hold costs
the longest postings while separating few documents. ``--impact-scales`` re-rounds every impact (both
sides) at a fraction of the model's quantization scale: Lucene packs a block of 128 postings' impacts
into as many bits as the block's largest needs, so a coarser scale is a smaller index; encoding with
``--quant-scale`` at that fraction of the model's scale gives the same vectors up to the double rounding.

    python -m splare_pyserini.bench.prune --dataset nfcorpus --split dev --output runs/prune/nfcorpus.dev

Writes ``prune.json`` and ``prune.md``: nDCG@10, R@100, non-zeros, index size and the postings a
query reads (Lucene's cost: the summed document frequencies of its terms) per pair, and the cheapest
pair within ``--tolerance`` nDCG@10 of the unpruned model (at min idf 0, Pyserini's default).

    python -m splare_pyserini.bench.prune --dataset nfcorpus --split dev --output runs/prune/nfcorpus.dev \
        --topk 0 --query-topk 0 --min-idfs 0 0.1 0.2 0.3 0.4 0.5 0.7
    python -m splare_pyserini.bench.prune --dataset nfcorpus --split dev --output runs/prune/nfcorpus.dev \
        --topk 0 400 --query-topk 0 --impact-scales 1 0.5 0.25 0.125
"""
from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import check_fields, option, parse_config, require
from ..datasets import load_beir, resolve_beir_folder
from ..encode import encode_corpus, encode_queries
from ..errors import cli_main
from ..io import atomic_write, load_row, markdown_table, save_row, write_json
from ..lucene.evaluate import DEFAULT_MEASURES, evaluate_run
from ..lucene.index import index_size_bytes, index_vectors, read_index_info
from ..lucene.postings import document_frequencies, mean_nonzeros, mean_postings, read_vectors, searched
from ..lucene.search import open_searcher, search_topics
from ..model.settings import DEFAULT_MODEL, INFO_FILE, EncoderSettings
from ..pipeline import RunSettings, qrels_file

log = logging.getLogger(__name__)
ALL = 0  # k = 0: every latent kept (the unpruned model)


@dataclass(frozen=True)
class PruneConfig:
    dataset: str = option("nfcorpus", "BEIR folder or name")
    split: str = option("dev", "qrels split whose queries are run: a train or dev split (test is refused: "
                               "settings are never chosen on test)")
    output: str = option("runs/prune", "folder for the vectors, one index per document k, runs, prune.json/.md")
    model: str = option(DEFAULT_MODEL, "the model whose k is chosen (encoded unpruned)")
    sae: str | None = option(None, "SAE of a plain --model (default: a checkpoint's own)")
    topk: tuple[int, ...] = option((ALL, 128, 192, 256, 400), "latents kept per document (0: all)")
    query_topk: tuple[int, ...] = option((ALL, 16, 32, 64), "latents kept per query (0: all)")
    token_k: int | None = option(None, "latents the SAE keeps per token (default: the model's own, a "
                                       "checkpoint's trained value)")
    min_idfs: tuple[float, ...] = option((0.0,), "Pyserini's --min-idf values each pair is searched at (query terms "
                                                 "with idf = ln(N / df) at or below it are left out; 0: its default)")
    impact_scales: tuple[float, ...] = option((1.0,), "fractions of the model's quantization scale every impact is "
                                                      "re-rounded at, documents and queries (1: as encoded)")
    max_queries: int | None = option(None, "run only the first N queries of the split (by id order), e.g. a "
                                           "slice of a large train split")
    tolerance: float = option(0.005, "largest nDCG@10 loss against the unpruned model a chosen pair may have")
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.split != "test", "split: top-k is chosen on a train or dev split, never on test")
        for name in ("topk", "query_topk"):
            values = getattr(self, name)
            require(bool(values) and all(k >= 0 for k in values), f"{name}: one or more k >= 0 (0: all)")
        require(bool(self.min_idfs) and all(m >= 0 for m in self.min_idfs), "min_idfs: one or more values >= 0")
        require(not self.run.min_idf, "min_idf: the sweep takes --min-idfs")
        require(bool(self.impact_scales) and all(0 < f <= 1 for f in self.impact_scales),
                "impact_scales: one or more fractions in (0, 1]")
        require(self.max_queries is None or self.max_queries >= 1, "max_queries: must be >= 1")
        require(self.token_k is None or self.token_k >= 1, f"token_k: must be >= 1, got {self.token_k}")
        require(self.tolerance >= 0, "tolerance: must be >= 0")


def cut(vector: dict[str, int], k: int) -> dict[str, int]:
    """The ``k`` largest impacts of ``vector``, in its key order (latent id order, as the encoder writes
    it); among equal impacts the earlier key is kept (a stable sort)."""
    if k == ALL or len(vector) <= k:
        return vector
    kept = {t for t, _ in sorted(vector.items(), key=lambda item: -item[1])[:k]}
    return {t: w for t, w in vector.items() if t in kept}


def rescale(vector: dict[str, int], scale: float) -> dict[str, int]:
    """Impacts re-rounded at ``scale`` times their quantization scale (halves up), zeros dropped."""
    if scale == 1:
        return vector
    kept = {t: math.floor(w * scale + 0.5) for t, w in vector.items()}
    return {t: w for t, w in kept.items() if w > 0}


def variant(k: int, scale: float) -> str:
    """A cut's folder-name suffix: ``4``, or ``4-x0.25`` for impacts re-rounded at a quarter of the scale."""
    return f"{k}" if scale == 1 else f"{k}-x{scale:g}"


def cut_folder(source: Path, dest: Path, k: int, kind: str, scale: float = 1.0) -> Path:
    """Copy an encode folder's ``corpus/`` (kind ``corpus``) or ``queries.jsonl`` (``queries``) cut to ``k``
    and re-rounded at ``scale``, with its ``encode_info.json`` recording both."""
    info = json.loads((source / INFO_FILE).read_text(encoding="utf-8"))
    info[kind] = {**info.get(kind, {}), "topk": k or None, "cut_from": str(source),
                  **({"impact_scale": scale} if scale != 1 else {})}
    if scale != 1:
        info["quant_scale"] = info["quant_scale"] * scale
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted((source / "corpus").glob("*.jsonl")) if kind == "corpus" else [source / "queries.jsonl"]
    for file in files:
        target = dest / "corpus" / file.name if kind == "corpus" else dest / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(file, encoding="utf-8") as src, atomic_write(target) as out:
            for line in src:
                obj = json.loads(line)
                obj["vector"] = rescale(cut(obj["vector"], k), scale)
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    with atomic_write(dest / INFO_FILE) as out:
        json.dump(info, out, indent=2, sort_keys=True)
    return dest


def choose(rows: list[dict], tolerance: float) -> dict | None:
    """The setting with the fewest postings read (then the smallest index) whose nDCG@10 is within
    ``tolerance`` of the unpruned pair's at min idf 0 and impacts as encoded."""
    full = next((r for r in rows if r["topk"] == ALL and r["query_topk"] == ALL and not r.get("min_idf")
                 and r.get("impact_scale", 1) == 1), None)
    if full is None:
        return None
    within = [r for r in rows if r["nDCG@10"] >= full["nDCG@10"] - tolerance]
    return min(within, key=lambda r: (r["postings per query"], r["index MB"]))


def corpus_impacts(path: Path) -> tuple[float, int]:
    """Mean terms per document and the largest impact (the bits Lucene's blocks of impacts need), in one read."""
    total = count = top = 0
    for vector in read_vectors(path):
        total, count, top = total + len(vector), count + 1, max(top, *vector.values(), 0)
    return total / max(count, 1), top


def searched_per_query(queries: Path, kept: set[str]) -> float:
    """Mean number of a query file's terms that are sent to Lucene (those in ``kept``)."""
    counts = [sum(t in kept for t in vector) for vector in read_vectors(queries)]
    return sum(counts) / max(len(counts), 1)


def run_prune_sweep(cfg: PruneConfig) -> dict:
    """Encode once, cut, index, run and score every (document k, query k) pair; returns the report."""
    from ..model.encoder import SaeSparseEncoder

    output = Path(cfg.output)
    data = load_beir(resolve_beir_folder(cfg.dataset), cfg.split, need_qrels=True)
    if cfg.max_queries:
        keep = sorted(data.queries, key=lambda q: q.id)[:cfg.max_queries]
        data = replace(data, queries=keep, qrels={q.id: data.qrels[q.id] for q in keep if q.id in data.qrels})
    encoder = SaeSparseEncoder(EncoderSettings(model=cfg.model, sae=cfg.sae, topk=ALL, query_topk=ALL,
                                               token_k=cfg.token_k))
    vectors = output / "vectors"
    encode_corpus(data.corpus, vectors, encoder, cfg.run.batch_size, chunk_size=cfg.run.chunk_size, source=data.name)
    encode_queries(data.queries, vectors, encoder, source=f"{data.name}:{cfg.split}")
    qrels = qrels_file(data, output, cfg.split)

    @functools.cache
    def query_file(qk: int, f: float) -> Path:
        """The queries cut to ``qk`` and re-rounded at ``f``: written once, shared by every document variant."""
        return (cut_folder(vectors, output / f"query-{variant(qk, f)}", qk, "queries", f) if qk or f != 1
                else vectors) / "queries.jsonl"

    @functools.cache
    def document_variant(k: int, f: float) -> tuple[Path, dict[str, int], int, float, int]:
        """The documents cut to ``k`` at ``f``: their index, document frequencies, count, mean terms and largest
        impact; built once per variant, and only for a variant with a row not cached yet."""
        docs = cut_folder(vectors, output / f"doc-{variant(k, f)}", k, "corpus", f) if k or f != 1 else vectors
        index = output / f"doc-{variant(k, f)}" / "index"
        if read_index_info(index) is None:
            index_vectors(docs, index, threads=cfg.run.threads, overwrite=True)
        freq, documents = document_frequencies(docs / "corpus")
        return (index, freq, documents, *corpus_impacts(docs / "corpus"))

    rows = []
    for k, f in ((k, f) for k in cfg.topk for f in cfg.impact_scales):
        for qk, m in ((qk, m) for qk in cfg.query_topk for m in cfg.min_idfs):
            # postings: of the terms searched (counted so since min idf existed; older rows are recomputed)
            key = {"model": encoder.info()["model_hash"], "split": cfg.split, "queries": len(data.queries),
                   "topk": k, "query_topk": qk, "run": cfg.run.key(), "postings": "searched terms",
                   **({"min_idf": m} if m else {}), **({"impact_scale": f} if f != 1 else {})}
            name = f"doc-{variant(k, f)}-query-{qk}" + (f"-idf-{m:g}" if m else "")
            cached = output / "rows" / f"{name}.json"
            row = load_row(cached, key)
            if row is None:
                index, freq, documents, doc_nnz, top = document_variant(k, f)
                queries = query_file(qk, f)
                trec = search_topics(open_searcher(index, str(queries), m), vectors / "topics.tsv",
                                     output / "runs" / f"{name}.trec", cfg.run.hits, cfg.run.threads,
                                     cfg.run.search_batch_size)
                kept = searched(freq, documents, m)
                row = {"topk": k, "query_topk": qk, "min_idf": m, "impact_scale": f,
                       **evaluate_run(data.qrels, trec, qrels, DEFAULT_MEASURES),
                       "doc nnz": round(doc_nnz, 1), "query nnz": round(mean_nonzeros(queries), 1),
                       "query terms searched": round(searched_per_query(queries, kept), 1),
                       "postings per query": round(mean_postings(queries, freq, documents, m)),
                       "max doc impact": top,
                       "index MB": round(index_size_bytes(index) / 1e6, 3)}
                save_row(cached, key, row)
            log.info("doc k %s, query k %s, min idf %g, impacts x%g: nDCG@10 %.4f", k or "all", qk or "all", m, f,
                     row["nDCG@10"])
            rows.append(row)
    chosen = choose(rows, cfg.tolerance)
    report = {"dataset": data.name, "split": cfg.split, "queries": len(data.queries), "model": cfg.model,
              "encoder": encoder.info(), "tolerance": cfg.tolerance, "rows": rows, "chosen": chosen}
    write_json(output / "prune.json", report)
    columns = ["doc k", "query k", "min idf", "impact scale", "nDCG@10", "R@100", "doc nnz", "query nnz",
               "query terms searched", "postings per query", "max doc impact", "index MB"]
    table = markdown_table(columns, [[r["topk"] or "all", r["query_topk"] or "all", f"{r['min_idf']:g}",
                                      f"{r.get('impact_scale', 1):g}", r["nDCG@10"], r["R@100"], r["doc nnz"],
                                      r["query nnz"], r["query terms searched"], r["postings per query"],
                                      r.get("max doc impact", ""), r["index MB"]] for r in rows])
    choice = (f"chosen (fewest postings within {cfg.tolerance} nDCG@10 of unpruned): doc k {chosen['topk'] or 'all'}, "
              f"query k {chosen['query_topk'] or 'all'}, min idf {chosen['min_idf']:g}, "
              f"impact scale {chosen.get('impact_scale', 1):g}" if chosen
              else "no unpruned row: nothing chosen")
    with atomic_write(output / "prune.md") as out:
        out.write(f"**{data.name}** ({cfg.split}, {len(data.queries)} queries, {cfg.model})\n\n{table}\n\n{choice}\n")
    log.info(choice)
    return report


def main(argv: list[str] | None = None) -> None:
    run_prune_sweep(parse_config(PruneConfig, argv, "python -m splare_pyserini.bench.prune", __doc__))


cli = cli_main(main, resumable=True)

if __name__ == "__main__":
    cli()
