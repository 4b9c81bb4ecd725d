"""The measures, checked by hand on tiny runs (no JVM: the ir-measures side and the empty-run rule)."""
import math

import pytest

from helpers import fail_if_called
from splare_pyserini.lucene import evaluate

QRELS = {"q1": {"d1": 1, "d3": 2}, "q2": {"d9": 1}, "q3": {"d4": 0}}  # q3 has no relevant document


def write_run(path, rows):
    path.write_text("".join(f"{q} Q0 {d} {rank} {100 - rank} t\n" for q, d, rank in rows))
    return path


def test_ir_measures_side_matches_a_hand_computation_over_judged_queries(tmp_path):
    run = write_run(tmp_path / "run.trec", [("q1", "d3", 1), ("q1", "d2", 2), ("q1", "d1", 3)])  # q2 finds nothing
    scores = evaluate.ir_measures_scores(QRELS, run, ["nDCG@10", "R@100", "MRR@10"])
    dcg = 2 / math.log2(2) + 1 / math.log2(4)  # trec_eval's gains are the grades themselves (not 2^g - 1)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    # averaged over q1 and q2 (q3 judges nothing relevant), q2 scoring 0 as trec_eval -c does
    assert scores["nDCG@10"] == pytest.approx(dcg / ideal / 2)
    assert scores["R@100"] == pytest.approx(0.5) and scores["MRR@10"] == pytest.approx(0.5)


def test_an_empty_run_scores_zero_without_trec_eval(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "trec_eval", fail_if_called("trec_eval"))
    (tmp_path / "empty.trec").write_text("")
    scores = evaluate.evaluate_run(QRELS, tmp_path / "empty.trec", tmp_path / "qrels.trec", ("nDCG@10", "R@100"))
    assert scores == {"nDCG@10": 0.0, "R@100": 0.0, "nDCG@10 (ir-measures)": 0.0, "R@100 (ir-measures)": 0.0}


def test_a_missing_run_is_a_one_line_error(tmp_path):
    with pytest.raises(evaluate.InputError, match="no such run file"):
        evaluate.evaluate_run(QRELS, tmp_path / "nope.trec", tmp_path / "qrels.trec")
