"""How the bench times things: one method for every system, so their figures compare.

Encode cost is the ratio of a system's full encode to its backbone's own forward pass, and to the
floor (that forward pass plus the projection's one dense matmul), over the same length-sorted
batches, timed side by side (interleaved, best of N) so machine noise hits all alike. Query latency
is timed on one thread, per query, after a warm-up, as p50/p95; throughput as queries per second of
a batch search with two threads.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence, TypeVar

from ..model.backbone import length_sorted_batches

T = TypeVar("T")
Batch = list[str]
WARMUP = 10  # untimed calls before timing: first calls pay for JIT, caches and allocation
QPS_THREADS = 2  # search threads of the throughput figure: Pyserini's batch search, on this class of machine
QPS_FIELD = f"QPS {QPS_THREADS} threads"


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds (nearest rank: a real observed latency, not an interpolation)."""
    ordered = sorted(seconds)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
    return {"p50": round(pick(0.50) * 1e3, 3), "p95": round(pick(0.95) * 1e3, 3)}


def time_each(items: Sequence[T], call: Callable[[T], object]) -> list[float]:
    """Wall time of ``call(item)`` for each item, after an untimed warm-up pass over the first few."""
    for item in items[:WARMUP]:
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


def with_threads(n: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` with torch on ``n`` threads (one: per-query latency, as a single-threaded server sees it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def encode_cost(texts: Sequence[str], lengths: Sequence[int], batch_size: int, backbone: Callable[[Batch], object],
                encode: Callable[[Batch], object], repeats: int,
                floor: Callable[[Batch], object] | None = None) -> dict[str, float]:
    """Encode docs/s and the ratio of ``encode`` to ``backbone`` (tokenization + the forward pass the
    encoder builds on) and to ``floor`` (that, plus the one dense ``d_in x d_sae`` matmul of the
    projection's pre-activations: what no implementation of the method can skip), all over the same
    length-sorted batches of ``texts`` (all cores, as encoding runs)."""
    import torch

    batches = [[texts[i] for i in idx] for idx in length_sorted_batches(lengths, batch_size)]

    def run(step: Callable[[Batch], object]) -> Callable[[], None]:
        @torch.inference_mode()
        def all_batches() -> None:
            for batch in batches:
                step(batch)
        return all_batches

    calls = {"backbone": run(backbone), "encode": run(encode), **({"floor": run(floor)} if floor else {})}
    best = side_by_side(calls, repeats)
    row = {"encode docs/s": round(len(texts) / best["encode"], 1),
           "encode / backbone": round(best["encode"] / best["backbone"], 3)}
    if floor:
        row["encode / floor"] = round(best["encode"] / best["floor"], 3)
    return row


def queries_per_second(n_queries: int, batch: Callable[[int], object], threads: int = QPS_THREADS,
                       repeats: int = 2) -> dict[str, float]:
    """Throughput of ``batch(threads)`` (all ``n_queries`` queries, searched ``threads`` at a time as
    Pyserini's batch search runs them), best of ``repeats`` after one untimed warm-up run."""
    batch(threads)
    best = side_by_side({"batch": lambda: batch(threads)}, repeats)["batch"]
    return {f"QPS {threads} threads": round(n_queries / best, 1)}


def latency(n_queries: int, pre_encoded: Callable[[int], object],
            on_the_fly: Callable[[int], object] | None = None) -> dict[str, float]:
    """p50/p95 ms of searching query ``i`` with its vector already made (``pre_encoded``) and with the
    query encoded inside the call (``on_the_fly``; a system without a query encoder times one search for both)."""
    def both() -> tuple[list[float], list[float]]:
        pre = time_each(range(n_queries), pre_encoded)
        return pre, (time_each(range(n_queries), on_the_fly) if on_the_fly else pre)
    pre, fly = with_threads(1, both)
    p, f = percentiles_ms(pre), percentiles_ms(fly)
    return {"latency p50 ms": p["p50"], "latency p95 ms": p["p95"],
            "on-the-fly p50 ms": f["p50"], "on-the-fly p95 ms": f["p95"]}
