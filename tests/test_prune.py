"""Choosing top-k by measurement: integer vectors cut as the encoder cuts, every pair scored, test refused."""
import json
import math

import pytest

from helpers import build_tiny_beir, fail_if_called
from splare_pyserini.bench.prune import PruneConfig, choose, cut, rescale, run_prune_sweep, variant
from splare_pyserini.errors import InputError


def test_cut_keeps_the_largest_impacts_in_key_order_and_earlier_keys_on_ties():
    vector = {"L3": 5, "L7": 9, "L12": 5, "L40": 1}
    assert cut(vector, 2) == {"L3": 5, "L7": 9}
    assert list(cut(vector, 3)) == ["L3", "L7", "L12"]
    assert cut(vector, 0) is vector and cut(vector, 4) is vector


def test_rescale_rounds_halves_up_and_drops_the_impacts_that_reach_zero():
    vector = {"L1": 1, "L2": 2, "L5": 6, "L9": 100}
    assert rescale(vector, 0.25) == {"L2": 1, "L5": 2, "L9": 25}  # 0.25 -> 0 dropped, 0.5 -> 1, 1.5 -> 2
    assert rescale(vector, 1) is vector
    assert (variant(400, 1), variant(400, 0.25), variant(0, 0.5)) == ("400", "400-x0.25", "0-x0.5")
    with pytest.raises(InputError, match=r"impact_scales: one or more fractions in \(0, 1\]"):
        PruneConfig(impact_scales=(0.5, 2.0))


def test_choose_takes_the_cheapest_pair_within_tolerance_of_unpruned():
    rows = [{"topk": 0, "query_topk": 0, "nDCG@10": 0.50, "postings per query": 900, "index MB": 9.0},
            {"topk": 256, "query_topk": 64, "nDCG@10": 0.497, "postings per query": 300, "index MB": 3.0},
            {"topk": 128, "query_topk": 16, "nDCG@10": 0.480, "postings per query": 50, "index MB": 1.5}]
    assert choose(rows, 0.005)["topk"] == 256
    assert choose(rows, 0.05)["topk"] == 128
    assert choose(rows[1:], 0.005) is None  # no unpruned row to compare with


def test_the_test_split_is_refused():
    with pytest.raises(InputError, match="never on test"):
        PruneConfig(split="test")


def test_min_idf_is_swept_by_its_own_option_and_keyed_only_when_set():
    from splare_pyserini.pipeline import RunSettings

    with pytest.raises(InputError, match="the sweep takes --min-idfs"):
        PruneConfig(run=RunSettings(min_idf=0.5))
    with pytest.raises(InputError, match="min_idfs: one or more values >= 0"):
        PruneConfig(min_idfs=(-0.1,))
    with pytest.raises(InputError, match="min_idf: must be >= 0"):
        RunSettings(min_idf=-1.0)
    from splare_pyserini.lucene.search import SearchConfig

    with pytest.raises(InputError, match="^min_idf: impact search only"):
        SearchConfig(index="i", topics="t", output="o", bm25=True, min_idf=0.5)
    assert "min_idf" not in RunSettings().key()  # rows cached before it existed keep their keys
    assert RunSettings(min_idf=0.4).key()["min_idf"] == 0.4
    rows = [{"topk": 0, "query_topk": 0, "min_idf": 0.0, "nDCG@10": 0.50, "postings per query": 900, "index MB": 9.0},
            {"topk": 0, "query_topk": 0, "min_idf": 0.4, "nDCG@10": 0.497, "postings per query": 400, "index MB": 9.0},
            {"topk": 0, "query_topk": 0, "min_idf": 1.0, "nDCG@10": 0.49, "postings per query": 200, "index MB": 9.0}]
    assert choose(rows, 0.005)["min_idf"] == 0.4  # measured against min idf 0, Pyserini's default
    assert choose(rows[1:], 0.005) is None
    # the reference is the impacts as encoded: a coarser row is a candidate, never the reference
    coarse = [{**rows[0], "impact_scale": 0.25, "nDCG@10": 0.6, "index MB": 5.0}, {**rows[0], "impact_scale": 1}]
    assert choose(coarse, 0.005)["impact_scale"] == 0.25
    assert choose(coarse[:1], 0.005) is None


@pytest.mark.integration
def test_every_pair_is_indexed_run_and_scored_then_cached(tmp_path, tiny_model, tiny_sae, monkeypatch):
    from splare_pyserini.bench import prune
    from splare_pyserini.datasets import load_beir
    from splare_pyserini.lucene.evaluate import ir_measures_scores

    beir = build_tiny_beir(tmp_path / "beir")
    cfg = PruneConfig(dataset=str(beir), split="train", output=str(tmp_path / "prune"), model=str(tiny_model),
                      sae=str(tiny_sae), topk=(0, 4), query_topk=(0, 6), min_idfs=(0.0, 0.3), impact_scales=(1, 0.25))
    kinds_cut, cut_folder = [], prune.cut_folder
    monkeypatch.setattr(prune, "cut_folder", lambda *args: kinds_cut.append(args[3]) or cut_folder(*args))
    report = run_prune_sweep(cfg)
    # each query variant (k 6 at scales 1 and 0.25, all at 0.25) written once, not per document variant or min idf
    assert kinds_cut.count("queries") == 3 and kinds_cut.count("corpus") == 3
    rows = {(r["topk"], r["query_topk"]): r for r in report["rows"] if r["min_idf"] == 0 and r["impact_scale"] == 1}
    assert set(rows) == {(0, 0), (0, 6), (4, 0), (4, 6)} and len(report["rows"]) == 16
    assert rows[(4, 0)]["doc nnz"] <= 4 < rows[(0, 0)]["doc nnz"]
    assert rows[(0, 6)]["query nnz"] <= 6 < rows[(0, 0)]["query nnz"]
    assert rows[(4, 6)]["postings per query"] < rows[(0, 0)]["postings per query"]
    assert rows[(4, 0)]["index MB"] < rows[(0, 0)]["index MB"]
    qrels = load_beir(beir, "train", need_qrels=True).qrels
    run = tmp_path / "prune" / "runs" / "doc-4-query-6.trec"
    assert rows[(4, 6)]["nDCG@10"] == pytest.approx(ir_measures_scores(qrels, run, ["nDCG@10"])["nDCG@10"], abs=1e-4)
    for line in (tmp_path / "prune" / "doc-4" / "corpus").glob("*.jsonl").__next__().open():
        assert len(json.loads(line)["vector"]) <= 4
    assert report["chosen"] == choose(report["rows"], cfg.tolerance)
    assert "| doc k | query k | min idf | impact scale | nDCG@10 |" in (tmp_path / "prune" / "prune.md").read_text()

    # at min idf 0.3 Lucene's scores are the dot products of the queries without their terms of idf <= 0.3
    cut_row = next(r for r in report["rows"] if r["min_idf"] == 0.3 and r["topk"] == 0 and r["query_topk"] == 0)
    assert cut_row["query terms searched"] < rows[(0, 0)]["query terms searched"]
    assert cut_row["postings per query"] < rows[(0, 0)]["postings per query"]
    vectors = tmp_path / "prune" / "vectors"
    docs = {d["id"]: d["vector"] for f in (vectors / "corpus").glob("*.jsonl") for d in map(json.loads, f.open())}
    df = {t: sum(t in v for v in docs.values()) for v in docs.values() for t in v}
    queries = {q["id"]: q["vector"] for q in map(json.loads, (vectors / "queries.jsonl").open())}
    checked = 0
    for line in (tmp_path / "prune" / "runs" / "doc-0-query-0-idf-0.3.trec").open():
        qid, _, docid, _, score, _ = line.split()
        kept = {t: w for t, w in queries[qid].items() if t in df and math.log(len(docs) / df[t]) > 0.3}
        assert float(score) == pytest.approx(sum(w * docs[docid].get(t, 0) for t, w in kept.items()))
        checked += 1
    assert checked > 0

    # a quarter of the scale: every impact re-rounded on both sides, the index smaller, the run their dot products
    coarse = next(r for r in report["rows"] if r["impact_scale"] == 0.25 and not r["topk"] and not r["query_topk"]
                  and r["min_idf"] == 0)
    assert coarse["max doc impact"] == math.floor(rows[(0, 0)]["max doc impact"] * 0.25 + 0.5)
    assert coarse["index MB"] < rows[(0, 0)]["index MB"] and coarse["doc nnz"] <= rows[(0, 0)]["doc nnz"]
    small = {d["id"]: rescale(d["vector"], 0.25) for d in
             (json.loads(line) for f in (vectors / "corpus").glob("*.jsonl") for line in f.open())}
    small_queries = {q: rescale(v, 0.25) for q, v in queries.items()}
    info = json.loads((tmp_path / "prune" / "doc-0-x0.25" / "encode_info.json").read_text())
    assert info["corpus"]["impact_scale"] == 0.25
    assert info["quant_scale"] == pytest.approx(json.loads((vectors / "encode_info.json").read_text())["quant_scale"] / 4)
    held = {t for v in small.values() for t in v if sum(t in d for d in small.values()) < len(small)}  # idf > 0
    checked = 0
    for line in (tmp_path / "prune" / "runs" / "doc-0-x0.25-query-0.trec").open():
        qid, _, docid, _, score, _ = line.split()
        expected = sum(w * small[docid].get(t, 0) for t, w in small_queries[qid].items() if t in held)
        assert float(score) == pytest.approx(expected)
        checked += 1
    assert checked > 0

    monkeypatch.setattr(prune, "search_topics", fail_if_called("search_topics"))
    monkeypatch.setattr(prune, "document_frequencies", fail_if_called("document_frequencies"))
    kinds_cut.clear()
    assert run_prune_sweep(cfg)["rows"] == report["rows"]  # every row cached
    assert kinds_cut == []  # and no query or document variant written or read again for them
