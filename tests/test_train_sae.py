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


def test_several_sources_get_equal_token_shares(tiny_model, tmp_path):
    from splare_pyserini.model.backbone import load_backbone
    from splare_pyserini.training.sae import collect_source_activations

    big = write_jsonl(tmp_path / "big.jsonl", [{"_id": f"b{i}", "text": "long text " * 40} for i in range(40)])
    small = write_jsonl(tmp_path / "small.jsonl", [{"_id": f"s{i}", "text": "short"} for i in range(40)])
    tokenizer, backbone = load_backbone(str(tiny_model), 2)
    acts = collect_source_activations(tokenizer, backbone, [str(big), str(small)], 64, max_tokens=100)
    assert acts.shape[0] == 50 + 40  # the big source stops at its share; the small one gives all it has
