"""Hybrid runs: fusion of TREC runs through Pyserini's own fusion code (``pyserini.fusion``).

Methods, as ``python -m pyserini.fusion --method`` names them: ``rrf`` (reciprocal-rank fusion, rank only) and
``normalize`` (each query's scores min-max normalized per run, then summed: CombSUM). ``normalize`` takes
``alpha``, the first of two runs' weight (the second gets 1 - alpha; 0.5 ranks as Pyserini's unweighted sum), so
a sparse run's integer dot products and BM25's scores are mixed on one scale."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..config import check_fields, option, require
from ..errors import InputError
from ..io import tmp_name

RRF_K = 60  # Cormack et al.'s constant, Pyserini's default
FUSION_METHODS = ("rrf", "normalize")
FUSION_HELP = ("the hybrid's fusion (Pyserini's): normalize (CombSUM: each query's scores min-max normalized per run, "
               "then summed) or rrf (reciprocal ranks, k = 60)")


def fusion_problem(method: str, alpha: float) -> str | None:
    """What is wrong with a fusion method and weight, or None."""
    if method not in FUSION_METHODS:
        return f"fusion: unknown method {method!r}; choose from {', '.join(FUSION_METHODS)}"
    if not 0.0 <= alpha <= 1.0:
        return f"fusion_alpha: must be in [0, 1], got {alpha}"
    if method == "rrf" and alpha != 0.5:
        return "fusion_alpha: weighs the runs of --fusion normalize only (RRF has no weights)"
    return None


def fuse_runs(runs: Sequence[str | Path], output: str | Path, method: str = "rrf", alpha: float = 0.5,
              rrf_k: int = RRF_K, depth: int = 1000, hits: int = 1000, tag: str | None = None) -> Path:
    """``runs`` fused by ``method`` (Pyserini's fusion; ``alpha`` weighs the first of two runs under
    ``normalize``), written atomically as a TREC run."""
    problem = fusion_problem(method, alpha)
    if problem:
        raise InputError(problem)
    # Pyserini's fusion and trectools are pure Python (pandas): no JVM needed, so none is booted
    missing = [str(r) for r in runs if not Path(r).is_file()]
    if missing:
        raise InputError(f"{missing[0]}: no such run file to fuse")
    fusion = importlib.import_module("pyserini.fusion")
    trectools = importlib.import_module("pyserini.trectools")
    loaded = [trectools.TrecRun(str(r)) for r in runs]
    if method == "rrf":
        fused = fusion.reciprocal_rank_fusion(loaded, rrf_k=rrf_k, depth=depth, k=hits)
    elif len(loaded) != 2:  # Pyserini's unweighted sum over any number of runs
        if alpha != 0.5:
            raise InputError(f"fusion_alpha: weighs exactly two runs, got {len(loaded)}")
        fused = fusion.normalize(loaded, depth=depth, k=hits)
    else:  # pyserini.fusion.normalize with weights: at alpha 0.5 its ranking, each score halved
        scaled = [run.clone().rescore(method=trectools.RescoreMethod.NORMALIZE)
                  .rescore(method=trectools.RescoreMethod.SCALE, scale=weight)
                  for run, weight in zip(loaded, (alpha, 1.0 - alpha))]
        fused = trectools.TrecRun.merge(scaled, trectools.AggregationMethod.SUM, depth=depth, k=hits)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = tmp_name(output)
    try:
        fused.save_to_txt(str(staging), tag=tag or method)
        staging.replace(output)
    finally:
        staging.unlink(missing_ok=True)
    return output


@dataclass(frozen=True)
class FusionSettings:
    """How a hybrid fuses two systems' runs: one of Pyserini's fusion methods. CombSUM is the default: chosen
    over RRF on NFCorpus dev and SciFact train (README, "The hybrid: CombSUM"); RRF uses ranks only and so
    throws away how far ahead a first hit is (Bruch et al., "An Analysis of Fusion Functions for Hybrid
    Retrieval", TOIS 2023, found the same for lexical + dense fusion)."""
    fusion: str = option("normalize", FUSION_HELP, choices=FUSION_METHODS)
    fusion_alpha: float = option(0.5, "with --fusion normalize: the first run's weight (SPLARE's; BM25 gets "
                                      "1 - it); 0.5 is Pyserini's unweighted sum")

    def __post_init__(self) -> None:
        check_fields(self)
        problem = fusion_problem(self.fusion, self.fusion_alpha)
        require(problem is None, problem or "")

    def label(self, first: str = "SPLARE", second: str = "BM25") -> str:
        """The hybrid's row name: ``RRF(SPLARE, BM25)``, ``CombSUM(SPLARE, BM25)`` (Fox and Shaw's name for
        summed normalized scores) or ``CombSUM(0.7 SPLARE, 0.3 BM25)``."""
        if self.fusion == "rrf":
            return f"RRF({first}, {second})"
        if self.fusion_alpha == 0.5:
            return f"CombSUM({first}, {second})"
        return f"CombSUM({self.fusion_alpha:g} {first}, {1 - self.fusion_alpha:g} {second})"

    def is_rrf(self) -> bool:
        return self.fusion == "rrf"


@dataclass(frozen=True)
class RrfFusionSettings(FusionSettings):
    """The same flags with RRF as the default: the leave-one-out protocol's hybrid, which the generalization
    issue specifies as reciprocal-rank fusion (``generalize``); ``--fusion normalize`` gives CombSUM there too."""
    fusion: str = option("rrf", FUSION_HELP, choices=FUSION_METHODS)
