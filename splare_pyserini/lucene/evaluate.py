"""Score TREC runs with trec_eval (Anserini's, through Pyserini) and check with ir-measures.

    python -m splare_pyserini.evaluate --qrels scifact --split test --run runs/scifact/run.splare.trec
    # is B better than A, or is the gap noise? each run after the first against the first, per measure
    python -m splare_pyserini.evaluate --qrels scifact --run A/run.trec B/run.trec --significance
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import check_fields, option, parse_config, require
from ..datasets import load_beir, read_beir_qrels, write_trec_qrels
from ..errors import InputError, cli_main
from .jvm import import_pyserini

# our name -> (trec_eval measure, ir-measures name)
MEASURE_CODES = {
    "nDCG@10": ("ndcg_cut.10", "nDCG@10"),
    "R@100": ("recall.100", "R@100"),
    "MRR@10": ("recip_rank", "RR@10"),
}
DEFAULT_MEASURES = ("nDCG@10", "R@100")


def trec_eval(qrels_trec: str | Path, run: str | Path, measure: str) -> float:
    """One measure averaged over all judged queries (``-c``), as Pyserini's BEIR regressions do."""
    # start_jvm (inside import_pyserini) also puts the 21+ java first on PATH: pyserini's trec_eval
    # shells out to a bare `java`
    pyserini_trec_eval = import_pyserini("pyserini.eval.trec_eval").trec_eval
    args = ["trec_eval", "-c", "-m", measure, str(qrels_trec), str(run)]
    if measure == "recip_rank":  # MRR@10: cut the run at depth 10
        args = ["trec_eval", "-c", "-M", "10", "-m", measure, str(qrels_trec), str(run)]
    with contextlib.redirect_stdout(io.StringIO()):
        return float(pyserini_trec_eval(args))


def per_query_scores(qrels: dict[str, dict[str, int]], run: str | Path, names: list[str]) -> dict[str, dict[str, float]]:
    """Each measure for every judged query (one with a relevant document), from ir-measures; a query the run
    misses scores 0, as trec_eval ``-c`` counts it, so each measure's mean is the figure trec_eval prints."""
    import ir_measures

    unknown = [n for n in names if n not in MEASURE_CODES]
    if unknown:
        raise InputError(f"measures: {unknown} not among {', '.join(MEASURE_CODES)}")
    if not Path(run).is_file():
        raise InputError(f"--run {run}: no such run file")
    measures = {ir_measures.parse_measure(MEASURE_CODES[n][1]): n for n in names}
    judged = sorted(q for q, docs in qrels.items() if any(r > 0 for r in docs.values()))
    values = {n: {q: 0.0 for q in judged} for n in names}
    if Path(run).stat().st_size:
        for metric in ir_measures.iter_calc(list(measures), qrels, ir_measures.read_trec_run(str(run))):
            if metric.query_id in values[measures[metric.measure]]:
                values[measures[metric.measure]][metric.query_id] = float(metric.value)
    return values


def ir_measures_scores(qrels: dict[str, dict[str, int]], run: str | Path, names: list[str]) -> dict[str, float]:
    """The same measures from ir-measures, averaged over all judged queries (missing ones score 0)."""
    return {n: sum(v.values()) / max(len(v), 1) for n, v in per_query_scores(qrels, run, names).items()}


def evaluate_run(qrels: dict[str, dict[str, int]], run: str | Path, qrels_trec: str | Path,
                 names: tuple[str, ...] = DEFAULT_MEASURES) -> dict[str, float]:
    """trec_eval scores, plus the ir-measures check under ``<name> (ir-measures)``."""
    if not Path(run).is_file():
        raise InputError(f"--run {run}: no such run file")
    if Path(run).stat().st_size == 0:  # no query found anything: every judged query scores 0 (trec_eval -c),
        # which trec_eval's reader cannot say of an empty file
        return {**{n: 0.0 for n in names}, **{f"{n} (ir-measures)": 0.0 for n in names}}
    scores = {n: trec_eval(qrels_trec, run, MEASURE_CODES[n][0]) for n in names}
    checks = ir_measures_scores(qrels, run, list(names))
    scores.update({f"{n} (ir-measures)": round(v, 4) for n, v in checks.items()})
    return scores


@dataclass(frozen=True)
class EvaluateConfig:
    qrels: str = option(help="BEIR folder or name, or a BEIR qrels .tsv")
    run: tuple[str, ...] = option(help="TREC run file(s)")
    split: str = option("test", "qrels split of a BEIR folder")
    measures: tuple[str, ...] = option(DEFAULT_MEASURES, f"measures, of: {', '.join(MEASURE_CODES)}")
    significance: bool = option(False, "also test each run after the first against the first: paired "
                                       "randomization test over the judged queries, two-sided")
    permutations: int = option(10_000, "random sign flips of the randomization test")
    seed: int = option(0, "seed of the randomization test")

    def __post_init__(self) -> None:
        check_fields(self)
        require(bool(self.run), "run: give at least one run file")
        require(not self.significance or len(self.run) >= 2, "significance: give at least two run files")
        require(self.permutations >= 1, f"permutations: {self.permutations}, must be at least 1")
        unknown = [m for m in self.measures if m not in MEASURE_CODES]
        require(not unknown, f"measures: {unknown} not among {', '.join(MEASURE_CODES)}")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(EvaluateConfig, argv, "python -m splare_pyserini.evaluate", __doc__)
    if Path(cfg.qrels).is_file():
        qrels = read_beir_qrels(cfg.qrels)
    else:
        qrels = load_beir(cfg.qrels, cfg.split, need_qrels=True).qrels
    qrels_trec = Path(cfg.run[0]).with_name(f"qrels.{cfg.split}.trec")
    write_trec_qrels(qrels, qrels_trec)
    for run in cfg.run:
        print(json.dumps({"run": run, **evaluate_run(qrels, run, qrels_trec, cfg.measures)}))
    if cfg.significance:
        from .significance import compare_runs

        for run in cfg.run[1:]:
            for measure in cfg.measures:
                test = compare_runs(qrels, cfg.run[0], run, measure, cfg.permutations, cfg.seed)
                print(json.dumps({"A": cfg.run[0], "B": run, **test.as_dict()}))


cli = cli_main(main)

if __name__ == "__main__":
    cli()
