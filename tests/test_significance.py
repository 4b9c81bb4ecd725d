"""The paired randomization test: against exact enumeration, on runs built by hand, and through the CLI."""
import itertools
import json

import numpy as np
import pytest

from splare_pyserini.lucene import evaluate, significance

QRELS = {f"q{i}": {f"d{i}": 1} for i in range(30)} | {"q_unjudged": {"d0": 0}}


def write_run(path, ranks):
    """Each query's relevant document at the given rank (None: the query retrieves nothing)."""
    lines = []
    for i, rank in enumerate(ranks):
        if rank is None:
            continue
        docs = [f"x{i}-{j}" for j in range(rank - 1)] + [f"d{i}"]
        lines += [f"q{i} Q0 {d} {r + 1} {100 - r} t\n" for r, d in enumerate(docs)]
    path.write_text("".join(lines))
    return path


def exact_p_value(d):
    observed = abs(np.mean(d))
    flips = [np.mean(np.array(s) * d) for s in itertools.product((-1, 1), repeat=len(d))]
    return np.mean([abs(f) >= observed - 1e-12 for f in flips])


@pytest.mark.parametrize("d", [[0.3, -0.1, 0.2, 0.05, -0.4, 0.25, 0.1, 0.0, 0.15, -0.05],
                               [0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, -0.01, 0.3]])
def test_the_p_value_estimates_the_exact_enumeration_of_sign_flips(d):
    d = np.array(d)
    exact = exact_p_value(d)
    permutations = 20_000
    estimate = significance.randomization_p_value(d, permutations, seed=1)
    standard_error = np.sqrt(exact * (1 - exact) / permutations) + 1 / permutations
    assert abs(estimate - exact) < 4 * standard_error


def test_identical_runs_differ_by_nothing_with_p_one(tmp_path):
    run = write_run(tmp_path / "a.trec", [1 + i % 5 for i in range(30)])
    test = significance.compare_runs(QRELS, run, run, "nDCG@10", permutations=500)
    assert test.difference == 0 and test.p_value == 1.0 and test.wins == test.losses == 0
    assert test.queries == 30  # the query with no relevant document is not counted


def test_a_run_better_on_every_query_is_significant_and_the_means_are_evaluates(tmp_path):
    worse = write_run(tmp_path / "a.trec", [3] * 20 + [None] * 10)  # ten queries retrieve nothing: score 0
    better = write_run(tmp_path / "b.trec", [1] * 30)
    test = significance.compare_runs(QRELS, worse, better, "nDCG@10", permutations=2_000, seed=3)
    assert test.wins == 30 and test.losses == 0
    assert test.p_value == pytest.approx(1 / 2_001)
    # the per-query means are the figures evaluate prints (trec_eval -c: missing queries count 0)
    printed = evaluate.ir_measures_scores(QRELS, worse, ["nDCG@10"])["nDCG@10"]
    assert test.mean_a == pytest.approx(printed) and test.mean_a == pytest.approx(20 * 0.5 / 30)
    assert test.mean_b == pytest.approx(1.0) and test.difference == pytest.approx(1 - 1 / 3)


def test_a_small_mixed_gap_is_not_significant_and_the_seed_reproduces_it(tmp_path):
    a = write_run(tmp_path / "a.trec", [1, 2] * 15)
    b = write_run(tmp_path / "b.trec", [2, 1] * 14 + [1, 1])  # swapped, but for a tie and one more win
    first = significance.compare_runs(QRELS, a, b, "MRR@10", permutations=3_000, seed=7)
    assert first == significance.compare_runs(QRELS, a, b, "MRR@10", permutations=3_000, seed=7)
    assert first.wins == 15 and first.losses == 14 and first.difference == pytest.approx(0.5 / 30)
    # 29 differences of +-0.5: no sign flip can bring the sum nearer zero than the observed 0.5
    assert first.p_value == 1.0


def test_bad_inputs_are_one_line_errors(tmp_path):
    run = write_run(tmp_path / "a.trec", [1] * 30)
    with pytest.raises(significance.InputError, match="no such run file"):
        significance.compare_runs(QRELS, run, tmp_path / "nope.trec")
    with pytest.raises(significance.InputError, match="not among"):
        significance.compare_runs(QRELS, run, run, "P@5")
    with pytest.raises(significance.InputError, match="no judged query"):
        significance.compare_runs({"q0": {"d0": 0}}, run, run)
    with pytest.raises(evaluate.InputError, match="significance: give at least two run files"):
        evaluate.main(["--qrels", "x", "--run", str(run), "--significance"])


def test_the_cli_prints_one_comparison_per_later_run_and_measure(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "trec_eval", lambda qrels, run, measure: 0.0)  # no JVM in the unit tier
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(30)))
    a = write_run(tmp_path / "a.trec", [2] * 30)
    b = write_run(tmp_path / "b.trec", [1] * 30)
    evaluate.main(["--qrels", str(qrels), "--run", str(a), str(b), "--significance", "--permutations", "999"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    tests = [line for line in lines if "p (randomization)" in line]
    assert [t["measure"] for t in tests] == ["nDCG@10", "R@100"]
    ndcg = tests[0]
    assert ndcg["A"] == str(a) and ndcg["B"] == str(b) and ndcg["B wins"] == 30
    assert ndcg["p (randomization)"] == pytest.approx(1 / 1000, abs=1e-4)
    assert tests[1]["B - A"] == 0 and tests[1]["p (randomization)"] == 1.0  # both find every relevant document


def exact_stratified_p_value(groups):
    weights = np.concatenate([np.full(len(g), 1 / (len(groups) * len(g))) for g in groups])
    d = np.concatenate(groups) * weights
    observed = abs(d.sum())
    flips = [abs(np.dot(s, d)) >= observed - 1e-12 for s in itertools.product((-1, 1), repeat=len(d))]
    return np.mean(flips)


def test_the_stratified_p_value_estimates_its_exact_enumeration_and_weighs_sets_alike():
    # a large set that slightly favours B and a small one that strongly favours A: the macro mean is A's
    groups = [np.array([0.05, 0.04, 0.06, 0.03, 0.05, 0.02, 0.04, 0.05]), np.array([-0.3, -0.2, 0.05])]
    exact = exact_stratified_p_value(groups)
    permutations = 20_000
    estimate = significance.stratified_p_value(groups, permutations, seed=2)
    assert abs(estimate - exact) < 4 * np.sqrt(exact * (1 - exact) / permutations) + 1 / permutations
    # pooling the queries instead weighs the eight small gains 8 : 3 against the large losses
    assert exact == pytest.approx(0.5) and exact_p_value(np.concatenate(groups)) == pytest.approx(0.785, abs=1e-3)
    with pytest.raises(significance.InputError, match="no judged query"):
        significance.stratified_p_value([groups[0], np.array([])])


def test_across_collections_one_set_is_the_plain_test_and_more_are_macro_averaged(tmp_path):
    a1 = write_run(tmp_path / "a1.trec", [2] * 30)
    b1 = write_run(tmp_path / "b1.trec", [1] * 10 + [2] * 20)
    a2 = write_run(tmp_path / "a2.trec", [1] * 30)
    b2 = write_run(tmp_path / "b2.trec", [3] * 30)
    one = significance.compare_across([(QRELS, a1, b1)], permutations=2_000, seed=5)
    plain = significance.compare_runs(QRELS, a1, b1, permutations=2_000, seed=5)
    assert one.as_dict() == plain.as_dict() and one.difference == pytest.approx(plain.difference)
    small = {q: QRELS[q] for q in ("q0", "q1", "q2", "q3", "q4")}  # the second collection: 5 judged queries
    both = significance.compare_across([(QRELS, a1, b1), (small, a2, b2)], permutations=2_000, seed=5)
    first = significance.compare_runs(QRELS, a1, b1)
    second = significance.compare_runs(small, a2, b2)
    assert both.queries == 35 and (both.wins, both.losses) == (first.wins, second.losses) == (10, 5)
    assert both.mean_a == pytest.approx((first.mean_a + second.mean_a) / 2)
    assert both.difference == pytest.approx((first.difference + second.difference) / 2)
    assert both.difference < 0 < first.difference  # five queries of the small set outweigh ten of the large
    with pytest.raises(significance.InputError, match="no collection"):
        significance.compare_across([])
