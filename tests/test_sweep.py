"""The SAE sweep: one factor at a time around a base, each point scored through the shared pipeline, cached."""
import json

import pytest

from helpers import make_beir_slice, fail_if_called
from splare_pyserini.config import parse_config
from splare_pyserini.sae_sweep import SweepConfig, SweepPoint, run_sweep, sweep_points


def test_points_vary_one_factor_at_a_time():
    base = SweepPoint(2, 48, 4)
    assert sweep_points(base, layers=[1, 2], widths=[48, 96], ks=[8]) == [
        base, SweepPoint(1, 48, 4), SweepPoint(2, 96, 4), SweepPoint(2, 48, 8)]
    cfg = parse_config(SweepConfig, ["--base", "2", "48", "4", "--layers", "1", "2", "--d-sae", "96", "--k", "8"], "x")
    assert cfg.points() == [base, SweepPoint(1, 48, 4), SweepPoint(2, 96, 4), SweepPoint(2, 48, 8)]
    assert cfg.shared() == SweepConfig().shared()  # the points differ, not the settings they share
    # the decoder bias start: auto by default (keyed), zeros keyed as rows cached before the field existed
    assert SweepConfig().shared()["b_dec_init"] == "auto"
    assert "b_dec_init" not in parse_config(SweepConfig, ["--b-dec-init", "zeros"], "x").shared()


def test_report_names_the_start_of_rows_cached_before_the_column():
    from splare_pyserini.training.sweep import COLUMNS, markdown

    old = {c: 1 for c in COLUMNS if c != "decoder bias init"}  # a row saved before the column existed
    for asked in ("mean", "zeros"):
        table = markdown([old, {**old, "decoder bias init": "zeros"}], "scifact", "train", SweepConfig(b_dec_init=asked))
        rows = [line for line in table.splitlines() if line.startswith("| 1 |")]
        assert [r.split(" | ")[7] for r in rows] == [asked, "zeros"]


@pytest.mark.integration
def test_sae_sweep_scores_points_and_caches(tmp_path, tiny_model, monkeypatch):
    from splare_pyserini.datasets import load_beir
    from splare_pyserini.lucene.evaluate import ir_measures_scores
    from splare_pyserini.training import sweep

    beir = make_beir_slice(tmp_path / "beir", n_queries=8, n_docs=60)  # test split only: the sweep falls back to it
    cfg = SweepConfig(dataset=str(beir), output=str(tmp_path / "sweep"), model=str(tiny_model), base=(2, 48, 4),
                      layers=(1,), steps=4, batch_size=64, max_tokens=3000, max_length=64, n_queries=5, n_docs=30)
    rows = run_sweep(cfg)
    assert [(r["layer"], r["d_sae"], r["k"]) for r in rows] == [(2, 48, 4), (1, 48, 4)]
    qrels = load_beir(tmp_path / "sweep" / "slice-test", "test", need_qrels=True).qrels
    for row in rows:
        point = tmp_path / "sweep" / f"L{row['layer']}-d48-k4"
        assert json.loads((point / "sae" / "cfg.json").read_text())["k"] == 4
        # the row reports this point's own run (ir-measures recomputes trec_eval's figure)
        recomputed = ir_measures_scores(qrels, point / "retrieval" / "run.trec", ["nDCG@10"])["nDCG@10"]
        assert row["nDCG@10"] == pytest.approx(recomputed, abs=1e-4)
        assert 0 < row["alive latents"] <= 1 and row["doc nnz"] > 0
        # the default start (auto) resolved per point from the states, and recorded in the row
        trained = json.loads((point / "sae" / "training.json").read_text())
        assert trained["b_dec_init_asked"] == "auto" and row["decoder bias init"] == trained["b_dec_init"]
    assert len((tmp_path / "sweep" / "slice-test" / "queries.jsonl").read_text().splitlines()) == 5
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| layer | d_sae | k | nDCG@10 |" in table and "test slice (5 queries, 30 documents)" in table

    monkeypatch.setattr(sweep, "run_point", fail_if_called("run_point"))
    assert run_sweep(cfg) == rows
    wider = SweepConfig(**{**cfg.__dict__, "d_sae": (96,)})  # adding a point keeps the others' cache
    with pytest.raises(AssertionError, match="run_point was called"):
        run_sweep(wider)
    assert run_sweep(wider, points=wider.points()[:2]) == rows
