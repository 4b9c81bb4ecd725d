"""Is one run better than another, or is the gap noise? A paired randomization test over judged queries.

Collections here are small (52 to a few hundred judged queries), so a gap of 0.01 nDCG@10 between two
systems can be one or two queries. The test is Fisher's paired randomization (sign-flip) test that
Smucker, Allan & Carterette (CIKM 2007) recommend for IR: under the null hypothesis the two systems are
exchangeable on every query, so each per-query difference keeps or flips its sign at random; the p-value
is the share of such flips whose mean difference is at least as far from zero as the observed one
(two-sided, counting the observed assignment, so it is never 0). Seeded, hence reproducible.

Across collections (leave-one-out rows of several held-out sets) the same test is stratified: the statistic
is the mean over collections of each one's mean difference, so a set of 52 queries weighs as much as one of
323 (the claim is "on every collection", not "on most queries"), and every query's sign still flips alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from .evaluate import per_query_scores

DEFAULT_PERMUTATIONS = 10_000


@dataclass(frozen=True)
class PairedTest:
    """B against A on one measure: mean of B − A over the judged queries, and the two-sided p-value."""
    measure: str
    queries: int
    mean_a: float
    mean_b: float
    difference: float
    p_value: float
    wins: int    # queries where B scores higher
    losses: int  # queries where B scores lower

    def as_dict(self) -> dict:
        return {"measure": self.measure, "queries": self.queries, "mean A": round(self.mean_a, 4),
                "mean B": round(self.mean_b, 4), "B - A": round(self.difference, 4),
                "p (randomization)": round(self.p_value, 4), "B wins": self.wins, "B losses": self.losses}


def randomization_p_value(differences: np.ndarray, permutations: int = DEFAULT_PERMUTATIONS,
                          seed: int = 0) -> float:
    """Two-sided p-value of the mean of paired differences under random sign flips."""
    if permutations < 1:
        raise InputError(f"permutations: {permutations}, must be at least 1")
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        raise InputError("no judged query to compare")
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    hits, left = 0, permutations
    while left:  # in chunks: 10,000 flips of a few hundred queries stay a few MB
        n = min(left, 1000)
        signs = rng.integers(0, 2, size=(n, d.size), dtype=np.int8) * 2 - 1
        # a tolerance for sums that equal the observed one but for float rounding
        hits += int((np.abs(signs @ d) / d.size >= observed - 1e-12).sum())
        left -= n
    return (hits + 1) / (permutations + 1)


def stratified_p_value(groups: Sequence[np.ndarray], permutations: int = DEFAULT_PERMUTATIONS,
                       seed: int = 0) -> float:
    """Two-sided p-value of the mean over groups of each group's mean paired difference, under random sign
    flips of every difference (the groups' queries are independent, so each flips alone)."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    if not arrays or any(a.size == 0 for a in arrays):
        raise InputError("no judged query to compare in one of the groups")
    # the statistic is a weighted sum of all differences: each query weighs 1 / (groups x its group's size)
    d = np.concatenate(arrays)
    weights = np.concatenate([np.full(a.size, 1.0 / (len(arrays) * a.size)) for a in arrays])
    return randomization_p_value(d * weights * d.size, permutations, seed)


def paired_scores(qrels: dict[str, dict[str, int]], run_a: str | Path, run_b: str | Path,
                  measure: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-query scores of runs A and B over the same judged queries, in one order."""
    a = per_query_scores(qrels, run_a, [measure])[measure]
    b = per_query_scores(qrels, run_b, [measure])[measure]
    queries = sorted(a)
    if not queries:
        raise InputError(f"{run_a}: no judged query in the qrels: nothing to compare")
    return np.array([a[q] for q in queries]), np.array([b[q] for q in queries])


def compare_runs(qrels: dict[str, dict[str, int]], run_a: str | Path, run_b: str | Path, measure: str = "nDCG@10",
                 permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedTest:
    """Run B against run A on the same judged queries."""
    va, vb = paired_scores(qrels, run_a, run_b, measure)
    d = vb - va
    return PairedTest(measure=measure, queries=int(d.size), mean_a=float(va.mean()), mean_b=float(vb.mean()),
                      difference=float(d.mean()), p_value=randomization_p_value(d, permutations, seed),
                      wins=int((d > 0).sum()), losses=int((d < 0).sum()))


def compare_across(pairs: Sequence[tuple[dict[str, dict[str, int]], str | Path, str | Path]],
                   measure: str = "nDCG@10", permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedTest:
    """Run B against run A over several collections, each ``(qrels, run A, run B)``: the means are the
    collections' macro averages, the test the stratified one (:func:`stratified_p_value`)."""
    if not pairs:
        raise InputError("no collection to compare")
    a_means, b_means, groups = [], [], []
    for qrels, run_a, run_b in pairs:
        va, vb = paired_scores(qrels, run_a, run_b, measure)
        a_means.append(va.mean())
        b_means.append(vb.mean())
        groups.append(vb - va)
    d = np.concatenate(groups)
    return PairedTest(measure=measure, queries=int(d.size), mean_a=float(np.mean(a_means)),
                      mean_b=float(np.mean(b_means)), difference=float(np.mean(b_means) - np.mean(a_means)),
                      p_value=stratified_p_value(groups, permutations, seed),
                      wins=int((d > 0).sum()), losses=int((d < 0).sum()))
