"""Is one run better than another, or is the gap noise? A paired randomization test over judged queries.

Collections here are small (52 to a few hundred judged queries), so a gap of 0.01 nDCG@10 between two
systems can be one or two queries. The test is Fisher's paired randomization (sign-flip) test that
Smucker, Allan & Carterette (CIKM 2007) recommend for IR: under the null hypothesis the two systems are
exchangeable on every query, so each per-query difference keeps or flips its sign at random; the p-value
is the share of such flips whose mean difference is at least as far from zero as the observed one
(two-sided, counting the observed assignment, so it is never 0). Seeded, hence reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def compare_runs(qrels: dict[str, dict[str, int]], run_a: str | Path, run_b: str | Path, measure: str = "nDCG@10",
                 permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedTest:
    """Run B against run A on the same judged queries."""
    a = per_query_scores(qrels, run_a, [measure])[measure]
    b = per_query_scores(qrels, run_b, [measure])[measure]
    queries = sorted(a)
    if not queries:
        raise InputError("no judged query in the qrels: nothing to compare")
    va = np.array([a[q] for q in queries])
    vb = np.array([b[q] for q in queries])
    d = vb - va
    return PairedTest(measure=measure, queries=len(queries), mean_a=float(va.mean()), mean_b=float(vb.mean()),
                      difference=float(d.mean()), p_value=randomization_p_value(d, permutations, seed),
                      wins=int((d > 0).sum()), losses=int((d < 0).sum()))
