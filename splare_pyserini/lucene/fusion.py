"""Hybrid runs: reciprocal-rank fusion of TREC runs through Pyserini's own fusion code."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..io import tmp_name
from .jvm import import_pyserini

RRF_K = 60  # Cormack et al.'s constant, Pyserini's default


def fuse_runs(runs: Sequence[str | Path], output: str | Path, rrf_k: int = RRF_K, depth: int = 1000,
              hits: int = 1000, tag: str = "rrf") -> Path:
    """RRF of ``runs`` (``pyserini.fusion.reciprocal_rank_fusion``), written atomically as a TREC run."""
    fusion = import_pyserini("pyserini.fusion")
    trectools = import_pyserini("pyserini.trectools")
    fused = fusion.reciprocal_rank_fusion([trectools.TrecRun(str(r)) for r in runs], rrf_k=rrf_k, depth=depth,
                                          k=hits)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = tmp_name(output)
    try:
        fused.save_to_txt(str(staging), tag=tag)
        staging.replace(output)
    finally:
        staging.unlink(missing_ok=True)
    return output
