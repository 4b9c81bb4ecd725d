"""The leave-one-out protocol: what each model may see, and one end-to-end run on two tiny sets."""
import json
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import TOPICS, build_tiny_beir
from splare_pyserini.errors import InputError
from splare_pyserini import generalize
from splare_pyserini.generalize import GeneralizeConfig, loo_sae, loo_sources, run_generalize, what_it_saw
from splare_pyserini.lucene.fusion import RrfFusionSettings

COMPUTING = ["compiler design", "operating systems", "database indexes", "network protocols", "garbage collection",
             "cache memory", "file systems", "parallel algorithms"]


def test_leave_one_out_sources_hold_nothing_of_the_held_out_set():
    sources = loo_sources("cacm", ("scifact", "nfcorpus", "cranfield", "cacm"), 1.0, 0.5)
    assert sources == ("scifact:train=1", "scifact:corpus=0.5", "nfcorpus:train=1", "nfcorpus:corpus=0.5",
                       "cranfield:corpus=0.5")  # cranfield has no train split; nothing of cacm
    assert not any(s.startswith("scifact") for s in loo_sources("scifact", ("scifact", "nfcorpus"), 1.0, 0.5))
    assert loo_sources("cacm", ("scifact", "cacm"), 2.0, 0) == ("scifact:train=2",)
    # the two source ablations: corpus text only, judgments only
    assert loo_sources("nfcorpus", ("scifact", "nfcorpus", "cacm"), 0, 0.5) == ("scifact:corpus=0.5",
                                                                                 "cacm:corpus=0.5")
    with pytest.raises(InputError, match="no training source is left without scifact"):
        loo_sources("scifact", ("scifact", "cacm"), 1.0, 0)  # cacm has no train split
    # a user's setting: the collection's own unlabeled text joins, never its judgments
    assert loo_sources("cacm", ("scifact", "cacm"), 1.0, 0, own_corpus_weight=0.5) == ("scifact:train=1",
                                                                                       "cacm:corpus=0.5")


def test_what_the_shipped_default_saw():
    in_domain = {"dataset": "scifact", "mode": "in-domain"}
    assert what_it_saw("default", "scifact", in_domain) == "train judgments"
    assert what_it_saw("default", "cacm", in_domain) == "nothing"
    mixed = {"sources": ["scifact:train", "cacm:corpus=0.5"]}
    assert what_it_saw("default", "cacm", mixed) == "unlabeled corpus text"
    assert what_it_saw("default-hybrid", "scifact", mixed) == "train judgments"
    assert what_it_saw("bm25", "scifact", in_domain) == "nothing"
    shipped_sae = GeneralizeConfig(sae="minilm-l6-layer6-topk-sae")  # trained on SciFact's text
    assert what_it_saw("splare-loo", "scifact", {}, shipped_sae) == "unlabeled corpus text (its SAE's training text)"
    assert what_it_saw("splare-loo", "cacm", {}, shipped_sae) == "nothing"
    own_text = GeneralizeConfig(own_corpus_weight=0.5)
    assert [what_it_saw(s, "cacm", {}, own_text) for s in ("splare-loo", "vocab-loo", "hybrid", "bm25")] == [
        "unlabeled corpus text"] * 3 + ["nothing"]
    with pytest.raises(InputError, match="unknown"):
        GeneralizeConfig(systems=("bm42",))


@pytest.mark.integration
def test_protocol_end_to_end_on_two_tiny_sets(tmp_path, tiny_model, tiny_sae, monkeypatch):
    roots = tmp_path / "sets"
    for name, topics, prefix in (("medical", TOPICS, ""), ("computing", COMPUTING, "c")):
        folder = build_tiny_beir(roots / name, topics, prefix)
        (folder / "qrels" / "test.tsv").write_text((folder / "qrels" / "train.tsv").read_text())
    (roots / "computing" / "qrels" / "train.tsv").unlink()  # one set without a train split
    monkeypatch.setenv("SPLARE_BEIR_DIR", str(roots))
    cfg = GeneralizeConfig(output=str(tmp_path / "out"), datasets=("medical", "computing"),
                           systems=("bm25", "default-hybrid", "splare-loo", "vocab-loo", "hybrid"), steps=2,
                           train_batch_size=4,
                           distill=None, model=str(tiny_model), sae=str(tiny_sae), negatives="none")
    results = run_generalize(cfg)
    assert set(results) == {"medical", "computing"}
    for held_out, rows in results.items():
        assert list(rows) == ["bm25", "default-hybrid", "splare-loo", "vocab-loo", "hybrid"]  # "default": fused,
        assert (tmp_path / "out" / held_out / "default" / "run.trec").is_file()  # run, not listed
        assert all(row["nDCG@10"] > 0 for row in rows.values())
        assert rows["bm25"]["nDCG@10"] > 0.5  # the tiny sets are lexical: BM25 finds them
        for sparse in ("splare-loo", "vocab-loo"):  # what their indexes hold
            row = rows[sparse]
            assert 0 < row["posting df"] <= 1 and 0 < row["terms"] and row["postings per query"] > 0
        [model] = (tmp_path / "out" / "models").glob(f"splare-without-{held_out}-*")
        trained = json.loads((model / "checkpoint" / "splare.json").read_text())["training"]["sources"]
        assert trained and not any(s.startswith(held_out) for s in trained)
    assert "**medical** (test)" in (tmp_path / "out" / "generalize.md").read_text()
    assert "| posting df |" in (tmp_path / "out" / "generalize.md").read_text()
    # SPLARE against its twin and BM25, query by query, in the JSON and under each table
    tests = json.loads((tmp_path / "out" / "generalize.json").read_text())["paired tests"]
    for held_out, rows in results.items():
        assert [(t["A"], t["B"]) for t in tests[held_out]] == [("vocab-loo", "splare-loo"), ("bm25", "splare-loo"),
                                                              ("bm25", "hybrid")]
        for t in tests[held_out]:
            assert t["mean A"] == pytest.approx(rows[t["A"]]["nDCG@10"], abs=1e-4)  # the table's figures
            assert t["mean B"] == pytest.approx(rows[t["B"]]["nDCG@10"], abs=1e-4)
            assert 0 < t["p (randomization)"] <= 1 and t["B wins"] + t["B losses"] <= t["queries"]
    assert "SPLARE, leave-one-out − vocabulary twin, leave-one-out:" in (tmp_path / "out" / "generalize.md").read_text()
    # and over both held-out sets, each set's mean weighing alike
    across = json.loads((tmp_path / "out" / "generalize.json").read_text())["paired tests across held-out sets"]
    assert [(t["A"], t["B"], t["sets"]) for t in across] == [(a, b, ["medical", "computing"]) for a, b in
                                                              (("vocab-loo", "splare-loo"), ("bm25", "splare-loo"),
                                                               ("bm25", "hybrid"))]
    for t in across:
        per_set = [next(u for u in tests[h] if (u["A"], u["B"]) == (t["A"], t["B"])) for h in t["sets"]]
        assert t["B - A"] == pytest.approx(sum(u["B - A"] for u in per_set) / 2, abs=2e-4)
        assert t["queries"] == sum(u["queries"] for u in per_set) and 0 < t["p (randomization)"] <= 1
    assert "**Across held-out sets**" in (tmp_path / "out" / "generalize.md").read_text()
    again = run_generalize(cfg)  # every row cached
    assert again == json.loads(json.dumps(results))
    # another split of a held-out set (medical's train queries: its test qrels here) reuses the corpus vectors
    # and index of the test rows instead of encoding the corpus again, and scores the same
    on_train = run_generalize(replace(cfg, split="train", held_out=("medical",),
                                      systems=("bm25", "splare-loo", "vocab-loo")))["medical"]
    for sparse in ("splare-loo", "vocab-loo"):
        chunks = sorted((tmp_path / "out" / "medical" / sparse / "vectors" / "corpus").glob("*.jsonl"))
        linked = tmp_path / "out" / "medical.train" / sparse / "vectors" / "corpus" / chunks[0].name
        assert chunks and linked.stat().st_ino == chunks[0].stat().st_ino
        assert on_train[sparse]["nDCG@10"] == results["medical"][sparse]["nDCG@10"]


@pytest.mark.integration
def test_each_held_out_set_gets_an_sae_trained_on_the_other_sets_only(tmp_path, tiny_model, monkeypatch):
    """Without --sae, held-out set H's SPLARE model uses an SAE trained on the text of the other sets
    (documents and non-test queries): nothing of H reaches any part of the model."""
    roots = tmp_path / "sets"
    for name, topics, prefix in (("medical", TOPICS, ""), ("computing", COMPUTING, "c"), ("third", TOPICS[:4], "t")):
        build_tiny_beir(roots / name, topics, prefix)
    monkeypatch.setenv("SPLARE_BEIR_DIR", str(roots))
    cfg = GeneralizeConfig(output=str(tmp_path / "out"), datasets=("medical", "computing", "third"),
                           model=str(tiny_model), sae_width=32, sae_k=4, sae_steps=3, layer=2)
    sae = Path(loo_sae(cfg, "medical"))
    assert sae.name.startswith("sae-without-medical-")
    record = json.loads((sae / "training.json").read_text())
    assert record["sources"] == ["computing", "third"] and (record["d_sae"], record["k"]) == (32, 4)
    built = (sae / "cfg.json").stat().st_mtime_ns
    assert loo_sae(cfg, "medical") == str(sae) and (sae / "cfg.json").stat().st_mtime_ns == built  # reused
    assert what_it_saw("splare-loo", "medical", {}, GeneralizeConfig(sae=str(sae))) == "nothing"
    assert what_it_saw("splare-loo", "computing", {}, GeneralizeConfig(sae=str(sae))).startswith("unlabeled")


def test_every_row_is_scored_on_the_split_it_is_filed_under(tmp_path, monkeypatch):
    """On ``--split dev`` every system's row passes the split on, so its qrels file is ``qrels.dev.trec`` (the
    scoring functions themselves run end to end in the integration tests); models are not loaded here."""
    from splare_pyserini import generalize

    splits = {}

    def recorder(*args, split="test", **kwargs):
        splits[system] = split
        return {}

    for name in ("run_bm25_system", "run_dense_system", "run_sparse_system", "run_fused_system"):
        monkeypatch.setattr(generalize, name, recorder)
    monkeypatch.setattr("splare_pyserini.model.dense.DenseEncoder", lambda name: name)
    monkeypatch.setattr("splare_pyserini.model.encoder.SaeSparseEncoder", lambda *args, **kwargs: None)
    monkeypatch.setattr(generalize, "train_loo", lambda *args: tmp_path)
    monkeypatch.setattr(generalize, "loo_sae", lambda *args: str(tmp_path))
    cfg = GeneralizeConfig(output=str(tmp_path), split="dev")
    for system in generalize.SYSTEMS:
        generalize.score_system(system, cfg, "nfcorpus", None, tmp_path / system)
    assert splits == {system: "dev" for system in generalize.SYSTEMS}


def test_the_sae_fit_term_reaches_the_leave_one_out_splare_model_only(tmp_path, tiny_sae, monkeypatch):
    calls = {}
    monkeypatch.setattr(generalize, "run_child", lambda module, argv, what: calls.__setitem__(what.name, argv))
    cfg = GeneralizeConfig(output=str(tmp_path), sae=str(tiny_sae), distill=None, recon_weight=0.5)
    fitted = generalize.train_loo(cfg, "nfcorpus", str(tiny_sae)).parent.name
    twin = generalize.train_loo(cfg, "nfcorpus", generalize.VOCAB).parent.name
    plain = generalize.train_loo(GeneralizeConfig(output=str(tmp_path), sae=str(tiny_sae), distill=None), "nfcorpus",
                                 str(tiny_sae)).parent.name

    def weight(name):
        return calls[name][calls[name].index("--recon-weight") + 1]

    assert (weight(fitted), weight(twin), weight(plain)) == ("0.5", "0.0", "0.0")
    assert len({fitted, twin, plain}) == 3  # another recipe, another model folder


def test_a_bfloat16_teacher_trains_other_models_and_float32_keeps_earlier_names(tmp_path, tiny_sae, monkeypatch):
    """--teacher-dtype reaches both leave-one-out models; at its default (float32) model folders and row keys are
    those of runs made before the setting existed, so their checkpoints and scores are reused."""
    calls = {}
    monkeypatch.setattr(generalize, "run_child", lambda module, argv, what: calls.__setitem__(what.name, argv))
    exact = GeneralizeConfig(output=str(tmp_path), sae=str(tiny_sae))
    fast = GeneralizeConfig(output=str(tmp_path), sae=str(tiny_sae), teacher_dtype="bfloat16")
    names = {(cfg.teacher_dtype, projection): generalize.train_loo(cfg, "nfcorpus", projection).parent.name
             for cfg in (exact, fast) for projection in (str(tiny_sae), generalize.VOCAB)}
    assert len(set(names.values())) == 4
    for (dtype, _), name in names.items():
        assert calls[name][calls[name].index("--teacher-dtype") + 1] == dtype
    before = {k: v for k, v in generalize.asdict(exact).items()
              if k not in ("output", "systems", "run", "fusion", "held_out", "split", "teacher_dtype")}
    assert generalize.row_key("splare-loo", exact, "nfcorpus")["recipe"] == before
    assert generalize.row_key("splare-loo", fast, "nfcorpus")["recipe"]["teacher_dtype"] == "bfloat16"


def test_fusion_keys_and_names_only_the_fused_rows(tmp_path):
    """--fusion changes what the two fused rows are (their keys and names), not the trained models' recipe;
    the protocol's default, RRF (as the generalization issue specifies its hybrid), keeps the keys of rows scored
    before the setting existed."""
    rrf = GeneralizeConfig(output=str(tmp_path))
    combsum = GeneralizeConfig(output=str(tmp_path), fusion=RrfFusionSettings("normalize", 0.7))
    assert rrf.fusion.is_rrf() and generalize.parse_config(
        GeneralizeConfig, ["--output", "o", "--fusion", "normalize"], "generalize").fusion.fusion == "normalize"
    for system in ("splare-loo", "vocab-loo", "default", "bm25"):
        assert generalize.row_key(system, combsum, "nfcorpus") == generalize.row_key(system, rrf, "nfcorpus")
    for system in generalize.FUSED:
        assert "fusion" not in generalize.row_key(system, rrf, "nfcorpus")
        assert generalize.row_key(system, combsum, "nfcorpus")["fusion"] == {"fusion": "normalize",
                                                                              "fusion_alpha": 0.7}
    assert generalize.row_labels(rrf)["hybrid"] == "RRF(SPLARE leave-one-out, BM25)"
    assert generalize.row_labels(combsum)["default-hybrid"] == "CombSUM(0.7 shipped default, 0.3 BM25)"


def test_leave_one_out_settings_are_checked_before_any_work():
    with pytest.raises(InputError, match="negatives: 'mined' is not one of bm25, none"):
        GeneralizeConfig(negatives="mined")
    with pytest.raises(InputError, match="layer: must be >= 1, got 0"):
        GeneralizeConfig(layer=0)
    with pytest.raises(InputError, match="train_weight and corpus_weight: must be >= 0, and not both 0"):
        GeneralizeConfig(train_weight=0, corpus_weight=0)


def test_a_killed_run_takes_its_training_child_with_it(tmp_path):
    """SIGTERM to the process that runs a child trainer ends the child too (no orphan goes on writing the
    folder a rerun resumes from) and exits as an interrupt; a failing child is a one-line error."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    stmt = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = subprocess.Popen([sys.executable, "-c", "from pathlib import Path\n"
                               "from splare_pyserini.generalize import run_child\n"
                               f"run_child('timeit', ['-n', '1', {stmt!r}], Path('x'))"])
    deadline = time.time() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) != 0
    with pytest.raises(ProcessLookupError):  # ended and reaped by the parent
        os.kill(child, 0)
    with pytest.raises(generalize.ArtifactError, match="training x failed .exit 1.; rerun to resume"):
        generalize.run_child("timeit", ["-n", "1", "raise SystemExit(1)"], Path("x"))
