"""Quality and cost side by side, every system in one run: BM25, SPLARE, vocabulary-SPLADE, dense.

For each BEIR set (default: every one under $SPLARE_BEIR_DIR and the shipped data) it runs
BM25 (Pyserini defaults), the SPLARE encoder, the vocabulary-SPLADE twin and dense
all-MiniLM-L6-v2 (exact inner product) through the same run and eval code, and reports
nDCG@10, R@100, MRR@10, non-zeros, index size, encode docs/s, encode cost as a ratio to the
backbone's own forward pass up to the same layer, query latency p50/p95 (one thread; queries
pre-encoded and encoded on the fly), and each figure's ratio to BM25. Results are cached per
set and system under ``--output``; ``--quick`` is a CI-sized smoke run on a slice.

    SPLARE_BEIR_DIR=../shared/data/beir python -m splare_pyserini.bench --output runs/bench

Writes ``bench.json``, ``bench.md`` and ``bench.png`` (nDCG@10 against query latency) and
prints, last, whether the cost targets hold.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from .atomic import atomic_write
from .data import Dataset, list_beir_folders, load_beir, resolve_beir_folder, write_beir_slice, write_trec_qrels
from .errors import InputError, cli_main
from .row_cache import load_row, save_row

MEASURES = ("nDCG@10", "R@100", "MRR@10")
SYSTEMS = ("bm25", "splare", "splare-pruned", "vocab", "dense")
LABELS = {"bm25": "BM25", "splare": "SPLARE", "splare-pruned": "SPLARE pruned", "vocab": "vocab-SPLADE",
          "dense": "dense MiniLM"}
# Cost targets (issue 5): what the benchmark checks last.
TARGET_ENCODE_RATIO = 1.15
TARGET_LATENCY_RATIO = 2.0
TARGET_INDEX_RATIO = 2.0


@dataclass(frozen=True)
class BenchConfig:
    splare_model: str | None = None  # None: the shipped default checkpoint
    vocab_model: str | None = None  # None: the untrained twin (base MiniLM, tied embeddings, --layer 4)
    vocab_layer: int = 4
    topk: int | None = None
    query_topk: int | None = None
    pruned_topk: int = 256  # splare-pruned: the SPLARE model, keeping the k largest latents per document
    pruned_query_topk: int = 64  # ... and per query
    batch_size: int = 32
    max_length: int = 256
    query_max_length: int = 128
    hits: int = 1000
    cost_docs: int = 256  # documents timed for encode docs/s and the backbone ratio
    cost_repeats: int = 2
    latency_queries: int | None = None  # None: every query


# ---------------------------------------------------------------- timing helpers

def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def pick(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
    return {"p50": round(pick(0.50) * 1e3, 3), "p95": round(pick(0.95) * 1e3, 3)}


def time_each(items: Sequence, call: Callable) -> list[float]:
    """Wall time of ``call(item)`` for each item, after one untimed warm-up pass over a few."""
    for item in items[:10]:
        call(item)
    out = []
    for item in items:
        start = time.perf_counter()
        call(item)
        out.append(time.perf_counter() - start)
    return out


def side_by_side(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds for each call, interleaved so machine noise hits all alike."""
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def with_one_thread(fn: Callable[[], object]) -> object:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- systems

def _sorted_batches(texts: list[str], lengths: list[int], batch_size: int) -> list[list[str]]:
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    return [[texts[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]


def sparse_encode_cost(encoder, texts: list[str], cfg: BenchConfig) -> dict:
    """Encode docs/s and the ratio to tokenization + the backbone's forward pass up to the same
    layer (``LayerBackbone``), on the same length-sorted batches, measured side by side."""
    import torch

    batches = _sorted_batches(texts, encoder.token_lengths(texts), cfg.batch_size)

    @torch.inference_mode()
    def backbone_only():
        for batch in batches:
            tokens = encoder.tokenize(batch)
            encoder.model.backbone(tokens["input_ids"], tokens["attention_mask"])

    def full_encode():
        for batch in batches:
            encoder.encode(batch)

    best = side_by_side({"backbone": backbone_only, "encode": full_encode}, cfg.cost_repeats)
    return {"encode docs/s": round(len(texts) / best["encode"], 1),
            "encode / backbone": round(best["encode"] / best["backbone"], 3)}


def dense_encode_cost(dense, texts: list[str], cfg: BenchConfig) -> dict:
    """Dense: its 'layer' is the last; the extra work is mean pooling and normalization."""
    import torch

    lengths = [len(ids) for ids in dense.tokenizer(texts, truncation=True, max_length=dense.max_length)["input_ids"]]
    batches = _sorted_batches(texts, lengths, cfg.batch_size)

    @torch.inference_mode()
    def backbone_only():
        for batch in batches:
            tokens = dense.tokenizer(batch, padding=True, truncation=True, max_length=dense.max_length,
                                     return_tensors="pt")
            dense.model(**tokens)

    def full_encode():
        for batch in batches:
            dense.encode(batch, batch_size=len(batch))

    best = side_by_side({"backbone": backbone_only, "encode": full_encode}, cfg.cost_repeats)
    return {"encode docs/s": round(len(texts) / best["encode"], 1),
            "encode / backbone": round(best["encode"] / best["backbone"], 3)}


def run_sparse(name: str, encoder, data: Dataset, folder: Path, qrels_trec: Path, cfg: BenchConfig,
               query_topk: int | None = None) -> dict:
    """Encode, impact-index, search (pre-encoded run), evaluate, then time costs and latency."""
    from .beir import mean_nonzeros
    from .encode import encode_corpus, encode_queries
    from .evaluate import evaluate_run
    from .index import index_size_bytes, index_vectors, read_index_info
    from .search import SaeQueryEncoder, open_searcher, search_topics

    vectors, index = folder / "vectors", folder / "index"
    print(encode_corpus(data.corpus, vectors, encoder, cfg.batch_size, source=data.name).line(f"{name} corpus"),
          file=sys.stderr)
    qenc = encoder.with_options(max_length=cfg.query_max_length, topk=query_topk)
    print(encode_queries(data.queries, vectors, qenc, source=data.name).line(f"{name} queries"), file=sys.stderr)
    if read_index_info(index) is None:
        index_vectors(vectors, index, threads=2, overwrite=True)
    pre_encoded = open_searcher(index, str(vectors / "queries.jsonl"))
    run = search_topics(pre_encoded, vectors / "topics.tsv", folder / "run.trec", cfg.hits)
    row = {**evaluate_run(data.qrels, run, qrels_trec, MEASURES),
           "doc nnz": round(mean_nonzeros(vectors / "corpus"), 1),
           "query nnz": round(mean_nonzeros(vectors / "queries.jsonl"), 1),
           "index MB": round(index_size_bytes(index) / 1e6, 3)}
    texts = [r.text for r in data.corpus[:cfg.cost_docs]]
    row.update(sparse_encode_cost(encoder, texts, cfg))  # both cores, as encoding runs
    # the texts the run used (topics.tsv): Pyserini's pre-encoded lookup is keyed by them
    queries = [line.split("\t", 1)[1].rstrip("\n") for line in
               (vectors / "topics.tsv").read_text(encoding="utf-8").splitlines(True)][:cfg.latency_queries]
    on_the_fly = open_searcher(index, SaeQueryEncoder(qenc))

    def latencies():
        pre = time_each(queries, lambda q: pre_encoded.search(q, cfg.hits))
        fly = time_each(queries, lambda q: on_the_fly.search(q, cfg.hits))
        return pre, fly
    pre, fly = with_one_thread(latencies)
    row.update(latency_fields(pre, fly))
    return row


def latency_fields(pre: list[float], fly: list[float]) -> dict:
    p, f = percentiles_ms(pre), percentiles_ms(fly)
    return {"latency p50 ms": p["p50"], "latency p95 ms": p["p95"],
            "on-the-fly p50 ms": f["p50"], "on-the-fly p95 ms": f["p95"]}


def run_bm25(data: Dataset, beir_folder: Path, folder: Path, qrels_trec: Path, cfg: BenchConfig) -> dict:
    from .evaluate import evaluate_run
    from .index import index_bm25, index_size_bytes, read_index_info
    from .search import open_searcher, search_topics

    index = folder / "index"
    if read_index_info(index) is None:
        index_bm25(beir_folder, index, threads=2, overwrite=True)
    topics = write_topics(data, folder / "topics.tsv")
    searcher = open_searcher(index, None, bm25=True)
    run = search_topics(searcher, topics, folder / "run.trec", cfg.hits)
    row = {**evaluate_run(data.qrels, run, qrels_trec, MEASURES),
           "index MB": round(index_size_bytes(index) / 1e6, 3)}
    queries = [q.text for q in data.queries[:cfg.latency_queries]]
    pre = with_one_thread(lambda: time_each(queries, lambda q: searcher.search(q, cfg.hits)))
    row.update(latency_fields(pre, pre))  # BM25 has no query encoder: both columns are the same search
    return row


def run_dense(data: Dataset, folder: Path, qrels_trec: Path, cfg: BenchConfig) -> dict:
    """all-MiniLM-L6-v2 mean-pooled, cosine = exact inner product over normalized vectors (flat)."""
    import torch

    from .backbone import DEFAULT_MODEL
    from .dense import DenseEncoder
    from .evaluate import evaluate_run

    dense = DenseEncoder(DEFAULT_MODEL, max_length=cfg.max_length)
    emb_path = folder / "corpus.pt"
    if not emb_path.is_file():
        texts = [r.text for r in data.corpus]
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
        from tqdm import tqdm
        parts = [dense.encode([texts[i] for i in order[s:s + cfg.batch_size]], cfg.batch_size)
                 for s in tqdm(range(0, len(order), cfg.batch_size), desc="dense corpus", unit="batch")]
        emb = torch.empty(len(texts), dense.model.config.hidden_size)
        emb[torch.tensor(order)] = torch.cat(parts)
        with atomic_write(emb_path, "wb") as out:
            torch.save({"ids": [r.id for r in data.corpus], "embeddings": emb}, out)
    saved = torch.load(emb_path)
    doc_ids, emb = saved["ids"], saved["embeddings"]
    queries = [q.text for q in data.queries]
    q_emb = dense.encode(queries, cfg.batch_size)
    k = min(cfg.hits, len(doc_ids))
    scores, index = (q_emb @ emb.T).topk(k, dim=1)
    run = folder / "run.trec"
    with atomic_write(run) as out:
        for qi, q in enumerate(data.queries):
            for rank, (s, d) in enumerate(zip(scores[qi].tolist(), index[qi].tolist()), 1):
                out.write(f"{q.id} Q0 {doc_ids[d]} {rank} {s:.6f} dense\n")
    row = {**evaluate_run(data.qrels, run, qrels_trec, MEASURES),
           "index MB": round(emb.numel() * 4 / 1e6, 3)}  # float32 flat index
    row.update(dense_encode_cost(dense, [r.text for r in data.corpus[:cfg.cost_docs]], cfg))
    timed = queries[:cfg.latency_queries]
    timed_emb = dense.encode(timed, 1)

    def latencies():
        with torch.inference_mode():
            pre = time_each(list(range(len(timed))), lambda i: (timed_emb[i] @ emb.T).topk(k))
            fly = time_each(timed, lambda q: (dense.encode([q], 1)[0] @ emb.T).topk(k))
        return pre, fly
    pre, fly = with_one_thread(latencies)
    row.update(latency_fields(pre, fly))
    return row


def write_topics(data: Dataset, path: Path) -> Path:
    with atomic_write(path) as out:
        for q in data.queries:
            out.write(f"{q.id}\t{' '.join(q.text.split())}\n")
    return path


# ---------------------------------------------------------------- orchestration

def make_encoder(system: str, cfg: BenchConfig):
    from .backbone import DEFAULT_MODEL
    from .encoder import EncoderSettings, SaeSparseEncoder
    from .vocab import VOCAB

    if system in ("splare", "splare-pruned"):
        topk = cfg.pruned_topk if system == "splare-pruned" else cfg.topk
        settings = EncoderSettings(max_length=cfg.max_length, topk=topk)
        if cfg.splare_model:
            settings = EncoderSettings(model=cfg.splare_model, max_length=cfg.max_length, topk=topk)
    else:
        settings = EncoderSettings(model=cfg.vocab_model or DEFAULT_MODEL, sae=VOCAB,
                                   layer=None if cfg.vocab_model else cfg.vocab_layer,
                                   max_length=cfg.max_length, topk=cfg.topk)
    return SaeSparseEncoder(settings)


# The settings each system's figures depend on: changing --vocab-model reruns only the vocab row.
SYSTEM_FIELDS = {"bm25": (), "dense": (),
                 "splare": ("splare_model", "topk", "query_topk"),
                 "splare-pruned": ("splare_model", "pruned_topk", "pruned_query_topk"),
                 "vocab": ("vocab_model", "vocab_layer", "topk", "query_topk")}
COMMON_FIELDS = ("batch_size", "max_length", "query_max_length", "hits", "cost_docs", "cost_repeats",
                 "latency_queries")


def system_config(cfg: BenchConfig, system: str) -> dict:
    """The part of the config that is the cache key of one system's row."""
    return {name: getattr(cfg, name) for name in COMMON_FIELDS + SYSTEM_FIELDS[system]}


def weights_fingerprint(cfg: BenchConfig, system: str) -> str | None:
    """Hash of the checkpoint's ``splare.json`` (training config, final log, quantization scale):
    a row measured on the old shipped default must not be reused once the default is retrained
    under the same (``None``) ``--splare-model``."""
    import hashlib

    from .encoder import DEFAULT_ENCODER_MODEL

    if system in ("splare", "splare-pruned"):
        model = cfg.splare_model or DEFAULT_ENCODER_MODEL
    elif system == "vocab" and cfg.vocab_model:
        model = cfg.vocab_model
    else:
        return None
    info = Path(model) / "splare.json"
    return hashlib.sha256(info.read_bytes()).hexdigest()[:16] if info.is_file() else None


def bench_dataset(folder: Path, output: Path, systems: Sequence[str], cfg: BenchConfig, force: bool = False) -> dict:
    """{system: row} for one BEIR folder; each system's row is cached in ``<output>/<system>/result.json``."""
    data = load_beir(folder, "test", need_qrels=True)
    qrels_trec = write_trec_qrels(data.qrels, output / "qrels.test.trec")
    rows: dict[str, dict] = {}
    for system in systems:
        sys_dir = output / system
        cached = sys_dir / "result.json"
        key = {"config": system_config(cfg, system), "system": system, "docs": len(data.corpus),
               "queries": len(data.queries), "weights": weights_fingerprint(cfg, system)}
        saved = None if force else load_row(cached, key)
        if saved is not None:
            rows[system] = saved
            print(f"{folder.name} {system}: cached", file=sys.stderr)
            continue
        sys_dir.mkdir(parents=True, exist_ok=True)
        print(f"{folder.name} {system}: running", file=sys.stderr)
        if system == "bm25":
            row = run_bm25(data, folder, sys_dir, qrels_trec, cfg)
        elif system == "dense":
            row = run_dense(data, sys_dir, qrels_trec, cfg)
        else:
            encoder = make_encoder(system, cfg)
            query_topk = cfg.pruned_query_topk if system == "splare-pruned" else cfg.query_topk
            row = {"model": encoder.settings.model,
                   **run_sparse(system, encoder, data, sys_dir, qrels_trec, cfg, query_topk)}
            if system == "vocab" and not cfg.vocab_model:
                row["label"] = "vocab-SPLADE (untrained)"
            if system == "splare-pruned":
                row["label"] = f"SPLARE, top-{cfg.pruned_topk} doc / top-{query_topk} query latents"
        save_row(cached, key, row)
        rows[system] = row
    add_ratios(rows)
    return rows


RATIO_FIELDS = ("nDCG@10", "R@100", "MRR@10", "index MB", "latency p50 ms", "latency p95 ms",
                "on-the-fly p50 ms", "on-the-fly p95 ms")


def add_ratios(rows: dict[str, dict]) -> None:
    """Each figure's ratio to BM25's, as ``<figure> / BM25``."""
    base = rows.get("bm25")
    if not base:
        return
    for row in rows.values():
        for field in RATIO_FIELDS:
            if field in row and base.get(field):
                row[f"{field} / BM25"] = round(row[field] / base[field], 3)


def check_targets(results: dict[str, dict[str, dict]]) -> list[tuple[str, bool, str]]:
    """(target, holds, measured) for SPLARE on every set."""
    checks = []
    for name, rows in results.items():
        for system in ("splare", "splare-pruned"):
            row = rows.get(system)
            if not row:
                continue
            label = row.get("label", LABELS[system])
            if "encode / backbone" in row:
                ratio = row["encode / backbone"]
                checks.append((f"{name}: {label} encode cost <= {TARGET_ENCODE_RATIO}x backbone forward",
                               ratio <= TARGET_ENCODE_RATIO, f"{ratio:.3f}x"))
            for field, target, what in (("latency p50 ms / BM25", TARGET_LATENCY_RATIO,
                                         "query latency (p50, pre-encoded)"),
                                        ("index MB / BM25", TARGET_INDEX_RATIO, "index size")):
                if field in row:
                    checks.append((f"{name}: {label} {what} <= {target}x BM25", row[field] <= target,
                                   f"{row[field]:.3f}x"))
    return checks


COLUMNS = ("nDCG@10", "R@100", "MRR@10", "doc nnz", "query nnz", "index MB", "encode docs/s", "encode / backbone",
           "latency p50 ms", "latency p95 ms", "on-the-fly p50 ms", "on-the-fly p95 ms")


def markdown(results: dict[str, dict[str, dict]]) -> str:
    lines = []
    for name, rows in results.items():
        lines += [f"**{name}** (figure, then ratio to BM25 where it has one)", "",
                  "| system | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for system, row in rows.items():
            cells = []
            for col in COLUMNS:
                if col not in row:
                    cells.append("")
                    continue
                value = f"{row[col]:.4f}" if col in MEASURES else f"{row[col]:g}"
                ratio = row.get(f"{col} / BM25")
                cells.append(value if ratio is None or system == "bm25" else f"{value} ({ratio:.2f}x)")
            lines.append(f"| {row.get('label', LABELS[system])} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = {"bm25": "s", "splare": "o", "splare-pruned": "P", "vocab": "^", "dense": "D"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs = []
    for n, (name, rows) in enumerate(results.items()):  # one colour per BEIR set, one marker per system
        for system, row in rows.items():
            x, y = row["on-the-fly p50 ms"], row["nDCG@10"]
            xs.append(x)
            ax.scatter(x, y, marker=markers[system], s=60, color=colors[n % len(colors)],
                       label=name if system == next(iter(rows)) else None)
            ax.annotate(row.get("label", LABELS[system]), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.3, max(xs) * 4)  # room for the labels on the right
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("query latency p50, ms (one thread, query encoded on the fly; log scale)")
    ax.set_ylabel("nDCG@10")
    ax.set_title("Quality against query latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="BEIR set", fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def run_bench(datasets: Sequence[str | Path], output: str | Path, systems: Sequence[str] = SYSTEMS,
              cfg: BenchConfig | None = None, quick: bool = False, force: bool = False) -> dict:
    """Run (or load from cache) every system on every set; write bench.json, bench.md, bench.png."""
    cfg = cfg or BenchConfig()
    output = Path(output)
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise InputError(f"--systems: unknown {unknown}; choose from {list(SYSTEMS)}")
    folders = [resolve_beir_folder(d) for d in datasets] if datasets else list_beir_folders()
    if not folders:
        raise InputError("no BEIR folders found: pass --datasets or set $SPLARE_BEIR_DIR")
    results: dict[str, dict[str, dict]] = {}
    for folder in folders:
        name = folder.name
        if quick:
            sliced = output / "slices" / name
            if not (sliced / "corpus.jsonl").is_file():
                write_beir_slice(folder, sliced, n_queries=30, n_docs=200)
            folder, name = sliced, f"{name} (quick slice)"
        results[name] = bench_dataset(folder, output / folder.name, systems, cfg, force)
    checks = check_targets(results)
    report = {"config": asdict(cfg), "quick": quick, "results": results,
              "targets": [{"target": t, "holds": h, "measured": m} for t, h, m in checks]}
    with atomic_write(output / "bench.json") as out:
        json.dump(report, out, indent=2)
    table = markdown(results)
    with atomic_write(output / "bench.md") as out:
        out.write(table + "\n")
    plot(results, output / "bench.png")
    print(table)
    print(f"wrote {output / 'bench.json'}, {output / 'bench.md'}, {output / 'bench.png'}")
    for target, holds, measured in checks:
        print(f"{'HOLDS' if holds else 'MISSED'}: {target} (measured {measured})")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splare_pyserini.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=None,
                        help="BEIR folders or names (default: all under $SPLARE_BEIR_DIR and the shipped data)")
    parser.add_argument("--output", default="runs/bench")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), help=f"subset of {list(SYSTEMS)}")
    parser.add_argument("--quick", action="store_true", help="a CI-sized smoke run on a slice of each set")
    parser.add_argument("--force", action="store_true", help="recompute even where results are cached")
    parser.add_argument("--splare-model", default=None, help="SPLARE checkpoint (default: the shipped one)")
    parser.add_argument("--vocab-model", default=None,
                        help="vocabulary-SPLADE checkpoint from `train --sae vocab` (default: the untrained twin)")
    parser.add_argument("--topk", type=int, default=None, help="keep the k largest terms per document (splare, vocab)")
    parser.add_argument("--query-topk", type=int, default=None, help="keep the k largest terms per query (splare, vocab)")
    parser.add_argument("--pruned-topk", type=int, default=BenchConfig.pruned_topk,
                        help="splare-pruned: latents kept per document (default: %(default)s)")
    parser.add_argument("--pruned-query-topk", type=int, default=BenchConfig.pruned_query_topk,
                        help="splare-pruned: latents kept per query (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--cost-docs", type=int, default=None, help="documents timed for encode cost (256; quick: 48)")
    parser.add_argument("--latency-queries", type=int, default=None, help="queries timed (default: all)")
    args = parser.parse_args(argv)
    cfg = BenchConfig(splare_model=args.splare_model, vocab_model=args.vocab_model, topk=args.topk,
                      query_topk=args.query_topk, pruned_topk=args.pruned_topk,
                      pruned_query_topk=args.pruned_query_topk, batch_size=args.batch_size, hits=args.hits,
                      cost_docs=args.cost_docs or (48 if args.quick else 256),
                      cost_repeats=1 if args.quick else 2, latency_queries=args.latency_queries)
    run_bench(args.datasets, args.output, args.systems, cfg, args.quick, args.force)


if __name__ == "__main__":
    cli_main(main)()
