"""The benchmark: every system through the same run/eval code, cached, with ratios and target checks."""
import json

import pytest

from helpers import make_beir_slice
from splare_pyserini import bench

FIELDS = ("nDCG@10", "R@100", "MRR@10", "index MB", "latency p50 ms", "latency p95 ms",
          "on-the-fly p50 ms", "on-the-fly p95 ms")


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    folder = make_beir_slice(tmp_path_factory.mktemp("beir") / "scifact-small", n_queries=20, n_docs=120)
    out = tmp_path_factory.mktemp("bench")
    cfg = bench.BenchConfig(cost_docs=16, cost_repeats=1, latency_queries=10, max_length=128,
                            pruned_topk=48, pruned_query_topk=8)
    report = bench.run_bench([folder], out, cfg=cfg)
    return folder, out, cfg, report


def test_every_system_is_measured_with_ratios_to_bm25(small_bench):
    _, out, _, report = small_bench
    rows = report["results"]["scifact-small"]
    assert list(rows) == list(bench.SYSTEMS)
    for system, row in rows.items():
        for field in FIELDS:
            assert row[field] > 0, (system, field)
            assert f"{field} / BM25" in row
    assert all(rows["bm25"][f"{f} / BM25"] == 1.0 for f in FIELDS)
    for system in ("splare", "splare-pruned", "vocab"):
        assert rows[system]["doc nnz"] > rows[system]["query nnz"] > 0
    assert rows["splare-pruned"]["doc nnz"] <= 48 < rows["splare"]["doc nnz"]  # --pruned-topk applied
    assert rows["splare-pruned"]["query nnz"] <= 8 < rows["splare"]["query nnz"]
    for system in ("splare", "splare-pruned", "vocab", "dense"):  # timings are reported, never asserted (noisy machine)
        assert rows[system]["encode / backbone"] > 0 and rows[system]["encode docs/s"] > 0
    # real retrieval on real SciFact text: every system finds the relevant abstracts
    assert rows["bm25"]["nDCG@10"] > 0.8 and rows["splare"]["nDCG@10"] > 0.7 and rows["dense"]["nDCG@10"] > 0.7
    saved = json.loads((out / "bench.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    assert len(saved["targets"]) == 6 and {t["holds"] for t in saved["targets"]} <= {True, False}


def test_runs_are_trec_files_scored_by_the_shared_eval(small_bench):
    _, out, _, _ = small_bench
    for system in bench.SYSTEMS:
        lines = (out / "scifact-small" / system / "run.trec").read_text().splitlines()
        qid, q0, _doc, rank, score, _tag = lines[0].split(" ")
        assert q0 == "Q0" and rank == "1" and float(score) > 0
        assert len({line.split(" ")[0] for line in lines}) == 20


def test_markdown_and_plot_are_written(small_bench):
    _, out, _, _ = small_bench
    table = (out / "bench.md").read_text()
    assert "| system | nDCG@10 | R@100 | MRR@10 |" in table and "vocab-SPLADE (untrained)" in table
    assert "dense MiniLM" in table and "x)" in table  # ratios to BM25 in parentheses
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_uses_the_cache(small_bench, monkeypatch, capsys):
    folder, out, cfg, report = small_bench

    def boom(*_args, **_kwargs):
        raise AssertionError("a cached system ran again")
    for name in ("run_bm25", "run_sparse", "run_dense"):
        monkeypatch.setattr(bench, name, boom)
    again = bench.run_bench([folder], out, cfg=cfg)
    assert again["results"] == report["results"]
    printed = capsys.readouterr().out
    assert printed.count("HOLDS: ") + printed.count("MISSED: ") == 6

    # a setting of one system invalidates that system's row only
    from dataclasses import replace
    ran = []

    def fake_sparse(system, *_args, **_kwargs):
        ran.append(system)
        return {**report["results"]["scifact-small"][system]}
    monkeypatch.setattr(bench, "run_sparse", fake_sparse)
    settings = type("Settings", (), {"model": "m"})()
    monkeypatch.setattr(bench, "make_encoder", lambda system, cfg: type("Encoder", (), {"settings": settings})())
    bench.run_bench([folder], out, cfg=replace(cfg, vocab_layer=1, pruned_topk=32))
    assert ran == ["splare-pruned", "vocab"]


def test_quick_cli_on_a_slice_and_unknown_system(tmp_path, capsys):
    bench.main(["--quick", "--systems", "bm25", "--output", str(tmp_path), "--datasets", "scifact"])
    table = (tmp_path / "bench.md").read_text()
    assert "scifact (quick slice)" in table and "| BM25 |" in table
    assert len((tmp_path / "slices" / "scifact" / "queries.jsonl").read_text().splitlines()) == 30
    from splare_pyserini.errors import InputError
    with pytest.raises(InputError, match="unknown"):
        bench.run_bench(["scifact"], tmp_path, systems=["bm42"])


def test_retrained_weights_invalidate_the_cached_row(tmp_path):
    """The cache key holds a hash of the checkpoint's splare.json, so a default retrained in place
    (same --splare-model, None) is measured again instead of reusing the old model's row."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "splare.json").write_text('{"layer": 4}')
    cfg = bench.BenchConfig(splare_model=str(ckpt))
    before = bench.weights_fingerprint(cfg, "splare")
    assert before and before == bench.weights_fingerprint(cfg, "splare-pruned")
    (ckpt / "splare.json").write_text('{"layer": 6}')
    assert bench.weights_fingerprint(cfg, "splare") not in (None, before)
    assert bench.weights_fingerprint(cfg, "bm25") is None
    assert bench.weights_fingerprint(bench.BenchConfig(), "splare")  # the shipped default has one too
