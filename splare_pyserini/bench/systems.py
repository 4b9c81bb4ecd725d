"""The systems the bench compares, as a registry of :class:`System` records.

A system is a name, how the table and plot show it, which config fields its figures depend on
(its cached row's key) and a run function. Quality, non-zeros and index size come from
:mod:`splare_pyserini.pipeline`, the code the ``beir`` command reports with; this module adds
only what the bench measures beyond it: encode cost and query latency. Adding a system is one
``register(System(...))``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..datasets import Dataset, read_tsv_topics
from ..model.artifacts import BASE_MODEL, MPNET
from ..model.settings import DEFAULT_MODEL, MLM, VOCAB, EncoderSettings
from .timing import encode_cost, latency, queries_per_second, with_threads

if TYPE_CHECKING:
    import torch

    from ..pipeline import RunSettings
    from . import BenchConfig

MEASURES = ("nDCG@10", "R@100", "MRR@10")
SPLADE_TINY = "splade-tiny"  # vocabulary SPLADE trained on MS MARCO, through its own MLM head
# Config fields every system's figures depend on, by what the system does.
SEARCHES = ("run", "latency_queries")
ENCODES = SEARCHES + ("max_length", "cost_docs", "cost_repeats")
SPARSE = ENCODES + ("query_max_length",)

RunFn = Callable[[Dataset, Path, Path, "BenchConfig"], dict]  # (data, BEIR folder, work folder, cfg) -> row


@dataclass(frozen=True)
class System:
    """One compared system: adding one is a ``register(System(...))``, never another table or branch."""
    name: str
    label: str  # the table's and the plot's name
    marker: str  # matplotlib marker in the plot
    key_fields: tuple[str, ...]  # BenchConfig fields its row depends on: changing another one keeps the row
    run: RunFn
    # the model whose content hash joins the row's key (None: no model)
    weights: Callable[["BenchConfig"], str | None] = field(default=lambda _cfg: None)
    describe: Callable[["BenchConfig"], str] | None = None  # a label that depends on the settings

    def label_for(self, cfg: "BenchConfig") -> str:
        return self.describe(cfg) if self.describe else self.label


REGISTRY: dict[str, System] = {}


def register(system: System) -> System:
    REGISTRY[system.name] = system
    return system


# ---------------------------------------------------------------- sparse: SPLARE, pruned SPLARE, vocabulary twin

def run_sparse(settings: Callable[["BenchConfig"], EncoderSettings],
               run_settings: Callable[["BenchConfig"], "RunSettings"] = lambda cfg: cfg.run,
               shares_with: Callable[["BenchConfig"], str | None] = lambda _cfg: None) -> RunFn:
    """A run function for the sparse system whose encoder ``settings(cfg)`` describes, searched with
    ``run_settings(cfg)`` (the bench's own, or a system's ``--min-idf``). Where ``shares_with(cfg)`` names
    a system run before it with the same encoder settings, that system's vectors and index are linked in
    instead of encoding and indexing the corpus again (a system that only searches differently)."""
    def run(data: Dataset, _beir: Path, folder: Path, cfg: "BenchConfig") -> dict:
        from ..lucene.search import SaeQueryEncoder, open_searcher
        from ..model.encoder import SaeSparseEncoder
        from ..model.quantize import quantize
        from ..pipeline import link_corpus_vectors, run_sparse_system

        encoder = SaeSparseEncoder(settings(cfg))
        how = run_settings(cfg)
        source = shares_with(cfg)
        if source:
            link_corpus_vectors(folder.parent / source, folder, encoder.info())
        row = {"model": encoder.settings.model, **run_sparse_system(encoder, data, folder, how, MEASURES)}
        # encode docs/s comes from the timed sample, measured as for dense (it replaces the pipeline's
        # whole-corpus figure, which is absent when finished chunks were reused)
        texts = [r.text for r in data.corpus[:cfg.cost_docs]]
        s = encoder.settings

        def backbone(batch: list[str]) -> object:
            tokens = encoder.tokenize(batch)
            return encoder.model.backbone(tokens["input_ids"], tokens["attention_mask"])
        row.update(encode_cost(texts, encoder.token_lengths(texts), cfg.run.batch_size, backbone,
                               lambda batch: quantize(encoder.pooled_weights(batch), s.quant_scale, s.topk, s.prefix),
                               cfg.cost_repeats, floor=floor_of(encoder)))
        # the texts of the run (topics.tsv): Pyserini's pre-encoded lookup is keyed by them
        vectors = folder / "vectors"
        topics = read_tsv_topics(vectors / "topics.tsv")
        queries = [q.text for q in topics][:cfg.latency_queries]
        pre = open_searcher(folder / "index", str(vectors / "queries.jsonl"), how.min_idf)
        fly = open_searcher(folder / "index", SaeQueryEncoder(encoder), how.min_idf)
        row.update(latency(len(queries), lambda i: pre.search(queries[i], cfg.run.hits),
                           lambda i: fly.search(queries[i], cfg.run.hits)))
        row.update(batch_throughput(pre, topics, cfg))
        return row
    return run


def floor_of(encoder) -> Callable[[list[str]], object]:
    """The encode floor of a sparse encoder: tokenization, the backbone's forward pass to the layer and one
    dense matmul of the real tokens' states with the projection's ``d_in x d_sae`` encoder matrix, in the
    precision the encoder's projection runs in."""
    model = encoder.model
    weight = projection_matrix(model)

    def floor(batch: list[str]) -> object:
        tokens = encoder.tokenize(batch)
        hidden = model.backbone(tokens["input_ids"], tokens["attention_mask"])
        return hidden[tokens["token_mask"].bool()].to(weight.dtype) @ weight
    return floor


def projection_matrix(model) -> "torch.Tensor":
    """The projection's dense ``d_in x d_sae`` encoder matrix, in the precision its encoding matmul runs in
    (``sae_dtype`` on the TopK path, the SAE's own otherwise). A SPLADE MLM head's is its tied decoder
    (hidden x vocabulary); its transform layer before it is the model's own cost above the floor."""
    from ..model.projection import MlmHeadProjection, topk_plan

    if isinstance(model.projection, MlmHeadProjection):
        return model.projection.head.predictions.decoder.weight.detach().T
    weight = model.projection.W_enc.detach()
    return weight.to(model.sae_dtype if topk_plan(model.projection) is not None else weight.dtype)


def batch_throughput(searcher, topics, cfg: "BenchConfig") -> dict[str, float]:
    """Queries per second of Pyserini's batch search over every topic (pre-encoded where a system encodes
    queries), ``QPS_THREADS`` search threads."""
    texts, ids = [q.text for q in topics], [q.id for q in topics]
    return queries_per_second(len(texts), lambda threads: searcher.batch_search(texts, ids, cfg.run.hits, threads))


def splare_settings(cfg: "BenchConfig", topk: int | None, query_topk: int | None,
                    quant_scale: float | None = None) -> EncoderSettings:
    return EncoderSettings(model=cfg.splare_model or DEFAULT_MODEL, max_length=cfg.max_length,
                           query_max_length=cfg.query_max_length, topk=topk, query_topk=query_topk,
                           token_k=cfg.token_k, quant_scale=quant_scale)


def vocab_settings(cfg: "BenchConfig") -> EncoderSettings:
    """A trained twin (``train --sae vocab``) as trained; else the untrained twin: the base MiniLM
    with its tied embeddings as the projection, at the shipped model's layer."""
    return EncoderSettings(model=cfg.vocab_model or BASE_MODEL, sae=VOCAB,
                           layer=None if cfg.vocab_model else cfg.vocab_layer, max_length=cfg.max_length,
                           query_max_length=cfg.query_max_length, topk=cfg.topk, query_topk=cfg.query_topk)


# ---------------------------------------------------------------- BM25 and dense

def run_bm25(data: Dataset, beir_folder: Path, folder: Path, cfg: "BenchConfig") -> dict:
    """Stock BM25 through the pipeline; it has no query encoder, so both latency columns are one search."""
    from ..lucene.search import open_bm25_searcher
    from ..pipeline import run_bm25_system

    row = run_bm25_system(data, beir_folder, folder, cfg.run, MEASURES, language=cfg.language)
    topics = read_tsv_topics(folder / "topics.tsv")
    queries = [q.text for q in topics][:cfg.latency_queries]
    searcher = open_bm25_searcher(folder / "index")
    row.update(latency(len(queries), lambda i: searcher.search(queries[i], cfg.run.hits)))
    row.update(batch_throughput(searcher, topics, cfg))
    return row


def run_dense(model: str) -> RunFn:
    """A run function for ``model`` as a dense bi-encoder (mean pooling, exact inner product), scored by the
    pipeline's dense run; the bench adds encode cost and latency."""
    def run(data: Dataset, _beir: Path, folder: Path, cfg: "BenchConfig") -> dict:
        import torch

        from ..model.dense import DenseEncoder
        from ..pipeline import encode_dense_corpus, run_dense_system

        dense = DenseEncoder(model, max_length=cfg.max_length)
        row = run_dense_system(dense, data, folder, cfg.run, MEASURES)
        _ids, emb = encode_dense_corpus(dense, data, folder / "corpus.pt", cfg.run.batch_size)

        def backbone(batch: list[str]) -> object:
            tokens = dense.tokenizer(batch, padding=True, truncation=True, max_length=dense.max_length,
                                     return_tensors="pt")
            return dense.model(**tokens)
        texts = [r.text for r in data.corpus[:cfg.cost_docs]]
        row.update(encode_cost(texts, dense.token_lengths(texts), cfg.run.batch_size, backbone,
                               lambda batch: dense.encode_documents(batch, batch_size=len(batch)), cfg.cost_repeats))
        timed = [q.text for q in data.queries][:cfg.latency_queries]
        timed_emb = dense.encode_queries(timed, 1)
        k = min(cfg.run.hits, emb.shape[0])
        with torch.inference_mode():
            row.update(latency(len(timed), lambda i: (timed_emb[i] @ emb.T).topk(k),
                               lambda i: (dense.encode_queries([timed[i]], 1)[0] @ emb.T).topk(k)))
            every = dense.encode_queries([q.text for q in data.queries], cfg.run.batch_size)
            # exact search of every pre-encoded query at once: one matmul on QPS_THREADS torch threads
            row.update(queries_per_second(len(every), lambda n: with_threads(n, lambda: (every @ emb.T).topk(k))))
        return row
    return run


# ---------------------------------------------------------------- the registry, in table order

def _splare_model(cfg: "BenchConfig") -> str:
    return cfg.splare_model or DEFAULT_MODEL


register(System("bm25", "BM25", "s", SEARCHES + ("language",), run_bm25,
                describe=lambda cfg: "BM25" if cfg.language == "en" else f"BM25 ({cfg.language} analyzer)"))
register(System("splare", "SPLARE", "o", SPARSE + ("splare_model", "topk", "query_topk", "token_k"),
                run_sparse(lambda cfg: splare_settings(cfg, cfg.topk, cfg.query_topk)),
                weights=_splare_model))
def pruned_run(cfg: "BenchConfig") -> "RunSettings":
    """The bench's run settings, at ``--pruned-min-idf`` where it is set."""
    return cfg.run if cfg.pruned_min_idf is None else replace(cfg.run, min_idf=cfg.pruned_min_idf)


def pruned_settings(cfg: "BenchConfig") -> EncoderSettings:
    return splare_settings(cfg, cfg.pruned_topk or None, cfg.pruned_query_topk or None, cfg.pruned_quant_scale)


def pruned_shares_with(cfg: "BenchConfig") -> str | None:
    """"splare" where the pruned system encodes exactly as it does (pruned by ``--pruned-min-idf`` alone)."""
    same = pruned_settings(cfg) == splare_settings(cfg, cfg.topk, cfg.query_topk)
    return "splare" if same and "splare" in cfg.systems else None


def describe_pruned(cfg: "BenchConfig") -> str:
    sides = " / ".join(f"top-{k} {side}" for k, side in ((cfg.pruned_topk, "doc"), (cfg.pruned_query_topk, "query")) if k)
    cuts = [f"{sides} latents" if sides else "", f"min idf {cfg.pruned_min_idf:g}" if cfg.pruned_min_idf is not None else "",
            f"quant scale {cfg.pruned_quant_scale:g}" if cfg.pruned_quant_scale is not None else ""]
    return "SPLARE, " + ", ".join(c for c in cuts if c) if any(cuts) else "SPLARE, unpruned"


register(System("splare-pruned", "SPLARE pruned", "P",
                SPARSE + ("splare_model", "pruned_topk", "pruned_query_topk", "pruned_min_idf", "pruned_quant_scale",
                          "token_k"),
                run_sparse(pruned_settings, pruned_run, shares_with=pruned_shares_with),
                weights=_splare_model, describe=describe_pruned))
register(System("vocab", "vocab-SPLADE", "^", SPARSE + ("vocab_model", "vocab_layer", "topk", "query_topk"),
                run_sparse(vocab_settings), weights=lambda cfg: cfg.vocab_model or BASE_MODEL,
                describe=lambda cfg: "vocab-SPLADE" if cfg.vocab_model else "vocab-SPLADE (untrained)"))
register(System("splade-tiny", "SPLADE-tiny (MS MARCO)", "v", SPARSE + ("topk", "query_topk"),
                run_sparse(lambda cfg: EncoderSettings(model=SPLADE_TINY, sae=MLM, max_length=cfg.max_length,
                                                       query_max_length=cfg.query_max_length, topk=cfg.topk,
                                                       query_topk=cfg.query_topk)),
                weights=lambda _cfg: SPLADE_TINY))
register(System("dense", "dense MiniLM", "D", ENCODES, run_dense(BASE_MODEL), weights=lambda _cfg: BASE_MODEL))
register(System("dense-mpnet", "dense mpnet", "d", ENCODES, run_dense(MPNET), weights=lambda _cfg: MPNET))
SYSTEM_NAMES = tuple(REGISTRY)
