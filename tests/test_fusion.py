"""Hybrid fusion through Pyserini's fusion code: RRF and (weighted) CombSUM of min-max normalized scores,
checked against hand computations on small runs, and the settings' errors."""
import pytest

from splare_pyserini.config import parse_config
from splare_pyserini.beir import BeirConfig
from splare_pyserini.errors import InputError
from splare_pyserini.lucene.fusion import fuse_runs
from splare_pyserini.lucene.fusion import FusionSettings

# two runs over two queries: integer dot products (SPLARE-like) and BM25-like scores, on unlike scales
SPARSE = {"q1": {"d1": 900, "d2": 700, "d3": 100}, "q2": {"d4": 50, "d5": 40}}
BM25 = {"q1": {"d3": 12.0, "d1": 8.0, "d4": 2.0}, "q2": {"d5": 30.0, "d6": 10.0, "d4": 9.0}}


def write_run(path, scores):
    lines = []
    for qid, docs in scores.items():
        for rank, (docid, score) in enumerate(sorted(docs.items(), key=lambda x: -x[1]), start=1):
            lines.append(f"{qid} Q0 {docid} {rank} {score} test")
    path.write_text("\n".join(lines) + "\n")
    return path


def read_run(path):
    run = {}
    for line in path.read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        run.setdefault(qid, []).append((int(rank), docid, float(score)))
    return {q: [(d, s) for _, d, s in sorted(hits)] for q, hits in run.items()}


def expected_combsum(alpha):
    """Per query and run, (s - min) / (max - min); weighted sum; a missing document counts 0 from that run;
    ties by docid, as Pyserini sorts."""
    fused = {}
    for qid in SPARSE:
        total = {}
        for run, weight in ((SPARSE, alpha), (BM25, 1 - alpha)):
            low, high = min(run[qid].values()), max(run[qid].values())
            for docid, score in run[qid].items():
                total[docid] = total.get(docid, 0.0) + weight * (score - low) / (high - low)
        fused[qid] = sorted(total.items(), key=lambda x: (-x[1], x[0]))
    return fused


@pytest.fixture
def runs(tmp_path):
    return write_run(tmp_path / "sparse.trec", SPARSE), write_run(tmp_path / "bm25.trec", BM25)


@pytest.mark.parametrize("alpha", [0.5, 0.8, 0.2])
def test_combsum_is_the_weighted_sum_of_min_max_normalized_scores(runs, tmp_path, alpha):
    fused = read_run(fuse_runs(runs, tmp_path / "fused.trec", method="normalize", alpha=alpha))
    for qid, expected in expected_combsum(alpha).items():
        assert [d for d, _ in fused[qid]] == [d for d, _ in expected], qid
        assert [s for _, s in fused[qid]] == pytest.approx([s for _, s in expected]), qid
    # the weight moves the ranking: BM25's d3 leads q1 when BM25 weighs more, SPARSE's d1 when it weighs less
    assert fused["q1"][0][0] == ("d1" if alpha >= 0.5 else "d3")


def test_rrf_is_reciprocal_ranks_summed(runs, tmp_path):
    fused = read_run(fuse_runs(runs, tmp_path / "rrf.trec"))
    q1 = {"d1": 1 / 61 + 1 / 62, "d2": 1 / 62, "d3": 1 / 63 + 1 / 61, "d4": 1 / 63}
    expected = sorted(q1.items(), key=lambda x: (-x[1], x[0]))
    assert [d for d, _ in fused["q1"]] == [d for d, _ in expected]
    assert [s for _, s in fused["q1"]] == pytest.approx([s for _, s in expected])
    assert (tmp_path / "rrf.trec").read_text().split("\n")[0].endswith(" rrf")


def test_bad_fusion_settings_are_one_line_errors(runs, tmp_path):
    with pytest.raises(InputError, match="unknown method 'average'"):
        fuse_runs(runs, tmp_path / "x.trec", method="average")
    with pytest.raises(InputError, match="must be in \\[0, 1\\]"):
        fuse_runs(runs, tmp_path / "x.trec", method="normalize", alpha=1.5)
    with pytest.raises(InputError, match="exactly two runs"):
        fuse_runs(runs + runs[:1], tmp_path / "x.trec", method="normalize", alpha=0.7)
    assert not (tmp_path / "x.trec").exists()
    with pytest.raises(InputError, match="normalize only"):
        FusionSettings("rrf", 0.7)


def test_beir_takes_the_fusion_flags_and_names_the_hybrid_by_them():
    cfg = parse_config(BeirConfig, ["--output", "o", "--fusion", "normalize", "--fusion-alpha", "0.7"], "beir")
    assert cfg.fusion == FusionSettings("normalize", 0.7)
    assert cfg.fusion.label() == "CombSUM(0.7 SPLARE, 0.3 BM25)"
    assert FusionSettings().label() == "CombSUM(SPLARE, BM25)"
    assert FusionSettings("rrf").label() == "RRF(SPLARE, BM25)"


class Hit:
    def __init__(self, docid, score):
        self.docid, self.score = docid, score


def hits_of(run, qid):
    return [Hit(d, s) for d, s in sorted(run[qid].items(), key=lambda x: -x[1])]


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_hybrid_searcher_fuses_hits_as_the_run_fusion_does(runs, tmp_path, alpha):
    """HybridSearcher.fuse (per query, in memory) gives the run fusion's ranking and scores."""
    from splare_pyserini.lucene.hybrid import HybridSearcher

    fused = read_run(fuse_runs(runs, tmp_path / "fused.trec", method="normalize", alpha=alpha))
    rrf = read_run(fuse_runs(runs, tmp_path / "rrf.trec"))
    combsum_searcher = HybridSearcher(None, None, alpha=alpha)
    rrf_searcher = HybridSearcher(None, None, fusion="rrf")
    for qid in SPARSE:
        for searcher, expected in ((combsum_searcher, fused[qid]), (rrf_searcher, rrf[qid])):
            got = searcher.fuse([hits_of(SPARSE, qid), hits_of(BM25, qid)], k=10)
            assert [h.docid for h in got] == [d for d, _ in expected], qid
            assert [h.score for h in got] == pytest.approx([s for _, s in expected], abs=1e-6), qid
    assert len(combsum_searcher.fuse([hits_of(SPARSE, "q1"), hits_of(BM25, "q1")], k=2)) == 2


def test_hybrid_searcher_and_search_refuse_bad_settings():
    from splare_pyserini.lucene.hybrid import HybridSearcher
    from splare_pyserini.lucene.search import SearchConfig

    with pytest.raises(InputError, match="normalize only"):
        HybridSearcher(None, None, fusion="rrf", alpha=0.3)
    with pytest.raises(InputError, match="depth: must be >= 1"):
        HybridSearcher(None, None, depth=0)
    with pytest.raises(InputError, match="not with --bm25"):
        parse_config(SearchConfig, ["--index", "i", "--topics", "t", "--output", "o", "--bm25",
                                    "--bm25-index", "b"], "search")


def test_combsum_of_three_runs_is_pyserinis_unweighted_sum(runs, tmp_path):
    third = write_run(tmp_path / "third.trec", {"q1": {"d2": 5.0, "d4": 1.0}, "q2": {"d6": 3.0, "d5": 2.0}})
    fused = read_run(fuse_runs([*runs, third], tmp_path / "three.trec", method="normalize"))
    # q1, each run min-max normalized, then summed: d2 = 0.75 + 1 (third run), d1 = 1 + 0.6 (BM25), d3 = 0 + 1,
    # d4 = 0 (the lowest of BM25's and of the third run's)
    assert fused["q1"] == [("d2", pytest.approx(1.75)), ("d1", pytest.approx(1.6)), ("d3", pytest.approx(1.0)),
                           ("d4", pytest.approx(0.0))]


@pytest.mark.parametrize("fusion, rows", [
    ("normalize", {"CombSUM(SPLARE, BM25)": ("hybrid", "normalize"), "RRF(SPLARE, BM25)": ("hybrid-rrf", "rrf")}),
    ("rrf", {"RRF(SPLARE, BM25)": ("hybrid", "rrf")}),
])
def test_beir_scores_the_chosen_fusion_and_rrf_beside_combsum(tmp_path, monkeypatch, fusion, rows):
    """beir's hybrid rows: the --fusion one in hybrid/, and under CombSUM the issue's RRF hybrid in hybrid-rrf/."""
    from helpers import build_tiny_beir
    from splare_pyserini import beir

    calls = {}

    def fused(data, systems, folder, run, split="test", fusion=None):
        calls[folder.name] = fusion.fusion
        return {"nDCG@10": 0.5, "R@100": 0.5}

    monkeypatch.setattr(beir, "run_sparse_system", lambda *args, **kwargs: {"nDCG@10": 0.4, "R@100": 0.4})
    monkeypatch.setattr(beir, "run_bm25_system", lambda *args, **kwargs: {"nDCG@10": 0.3, "R@100": 0.3})
    monkeypatch.setattr(beir, "run_fused_system", fused)
    encoder = type("Encoder", (), {"info": lambda self: {}})()
    folder = build_tiny_beir(tmp_path / "tiny")
    cfg = parse_config(BeirConfig, ["--output", str(tmp_path / "out"), "--dataset", str(folder), "--split", "train",
                                    "--fusion", fusion], "beir")
    results = beir.run_beir(cfg, encoder)
    assert list(results) == ["SPLARE", "BM25", *rows]
    assert calls == {folder_name: method for folder_name, method in rows.values()}


def test_missing_inputs_are_one_line_errors_naming_them(runs, tmp_path):
    from splare_pyserini.lucene.search import main as search_main

    with pytest.raises(InputError, match="nope.trec: no such run file"):
        fuse_runs([tmp_path / "nope.trec", runs[1]], tmp_path / "x.trec")
    assert not (tmp_path / "x.trec").exists()
    with pytest.raises(InputError, match="--bm25-index .*absent: no such index folder"):
        search_main(["--index", str(tmp_path), "--bm25-index", str(tmp_path / "absent"), "--topics", "t",
                     "--output", str(tmp_path / "y.trec")])
    assert not (tmp_path / "y.trec").exists()
