"""Retrieval fine-tuning (SPLARE recipe) on a tiny backbone: checkpoints, resume, LoRA, the vocabulary
twin, distillation, a trained SAE, a shipped-SAE reference, and refusals before any model loads.

Hard negatives come from ``negatives="none"`` or an in-memory source, so only the one test that
mines BM25 negatives boots a JVM."""
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import TOPICS, assert_resume_is_exact, build_tiny_beir, build_tiny_sae, fail_if_called
from splare_pyserini.model.checkpoint import read_checkpoint
from splare_pyserini.model.encoder import SaeSparseEncoder
from splare_pyserini.model.settings import EncoderSettings
from splare_pyserini.train import InMemoryNegatives, TrainConfig, Trainer, train

BLOCK = "encoder.layer.0.attention.self.query.weight"


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    return build_tiny_beir(tmp_path_factory.mktemp("tiny-beir"))


@pytest.fixture(scope="module")
def base_encoder(tiny_model, tiny_sae):
    return SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(tiny_sae)))


def config(tmp_path, tiny_beir, tiny_model, tiny_sae, **changes):
    base = dict(dataset=str(tiny_beir), output=str(tmp_path / "run"), model=str(tiny_model), sae=str(tiny_sae),
                steps=4, batch_size=4, warmup_steps=1, flops_warmup=2, doc_max_length=48, query_max_length=16,
                save_every=2, negatives="none")
    return TrainConfig(**{**base, **changes})


def state(encoder: SaeSparseEncoder) -> dict:
    return encoder.model.backbone.model.state_dict()


def test_defaults_reproduce_the_shipped_recipe():
    from splare_pyserini.model.artifacts import BASE_MODEL, resolve_path
    from splare_pyserini.model.settings import DEFAULT_MODEL, DEFAULT_SAE

    shipped = json.loads((Path(resolve_path(DEFAULT_MODEL)) / "splare.json").read_text())
    cfg = TrainConfig()
    assert (cfg.model, cfg.sae, cfg.negatives) == (BASE_MODEL, DEFAULT_SAE, "bm25")
    assert shipped["sae"] == DEFAULT_SAE and shipped["base_model"] == BASE_MODEL
    recipe = shipped["training"]
    for name in ("model", "sae", "steps", "batch_size", "lr", "warmup_steps", "temperature", "lambda_d", "lambda_q",
                 "flops_warmup", "query_max_length", "doc_max_length", "negatives_depth", "seed", "teacher",
                 "teacher_temperature", "distill_weight"):
        assert getattr(cfg, name) == recipe[name], name


def test_the_default_model_card_command_is_its_recorded_recipe():
    """The card's command, parsed as the CLI parses it, is exactly the config the checkpoint records."""
    import shlex
    from dataclasses import asdict

    from splare_pyserini.config import parse_config
    from splare_pyserini.model.artifacts import content_hash, resolve_path
    from splare_pyserini.model.settings import DEFAULT_MODEL

    folder = Path(resolve_path(DEFAULT_MODEL))
    blocks = (folder / "README.md").read_text().split("```")
    command = next(b for b in blocks if "python -m splare_pyserini.train " in b).replace("\\\n", " ")
    argv = shlex.split(command)
    cfg = json.loads(json.dumps(asdict(parse_config(TrainConfig, argv[argv.index("splare_pyserini.train") + 1:],
                                                    "train"))))
    recorded = json.loads((folder / "splare.json").read_text())["training"]
    assert recorded["sources"] and recorded["distill"] == "kl"
    differing = {k: (cfg.get(k), v) for k, v in recorded.items()
                 if k not in ("output", "teacher_cache", "sae") and cfg.get(k) != v}
    assert not differing
    # the SAE by content: the run may have named the folder that became the shipped copy, which the
    # writer then references by its shipped name
    assert content_hash(cfg["sae"]) == content_hash(json.loads((folder / "splare.json").read_text())["sae"])


def test_training_changes_only_the_blocks_and_exports_a_checkpoint(tmp_path, tiny_beir, tiny_model, tiny_sae,
                                                                    base_encoder):
    ckpt = train(config(tmp_path, tiny_beir, tiny_model, tiny_sae))
    info = json.loads((ckpt / "splare.json").read_text())
    assert info["projection"] == "sae" and info["layer"] == 2 and info["quant_scale"] > 0
    assert info["pooling"] == "max" and "sae" not in info  # a non-shipped SAE is stored, not referenced
    weights = load_file(str(ckpt / "backbone.safetensors"))
    assert weights and all(k.startswith("encoder.layer.") for k in weights)
    assert all(v.dtype == torch.float16 for v in weights.values())
    assert {k.split(".")[2] for k in weights} == {"0", "1"}  # blocks up to layer 2 only
    tuned = SaeSparseEncoder(EncoderSettings(model=str(ckpt)))
    assert tuned.settings.sae == str(ckpt / "sae") and tuned.settings.quant_scale == info["quant_scale"]
    assert not torch.equal(state(tuned)[BLOCK], state(base_encoder)[BLOCK])
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(state(tuned)[emb], state(base_encoder)[emb])
    torch.testing.assert_close(tuned.model.projection.W_enc, base_encoder.model.projection.W_enc)  # SAE frozen
    assert len((ckpt / "training_log.jsonl").read_text().splitlines()) == 4


def test_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_beir, tiny_model, tiny_sae):
    whole, resumed = assert_resume_is_exact(config(tmp_path / "a", tiny_beir, tiny_model, tiny_sae),
                                            config(tmp_path / "b", tiny_beir, tiny_model, tiny_sae),
                                            steps_before_death=2)
    assert (whole / "training_log.jsonl").read_text() == (resumed / "training_log.jsonl").read_text()


def test_lora_trains_adapters_only_and_exports_merged_block_weights(tmp_path, tiny_beir, tiny_model, tiny_sae,
                                                                   base_encoder):
    cfg = config(tmp_path, tiny_beir, tiny_model, tiny_sae, lora_rank=4, lr=1e-2, lora_export="merged")
    trainer = Trainer(cfg)
    trainable = [n for n, p in trainer.encoder.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ckpt = trainer.fit()
    weights = load_file(str(ckpt / "backbone.safetensors"))
    assert weights.keys() <= state(base_encoder).keys()  # plain names: adapters merged
    tuned = SaeSparseEncoder(EncoderSettings(model=str(ckpt)))
    assert not torch.equal(state(tuned)[BLOCK], state(base_encoder)[BLOCK])
    text = ["protein folding in yeast"]
    with torch.inference_mode():  # the merged checkpoint encodes as the adapted model did
        torch.testing.assert_close(tuned.model(**tuned.tokenize(text)), trainer.encoder.model(**tuned.tokenize(text)),
                                   atol=2e-2, rtol=2e-2)


def test_vocabulary_twin_trains_on_the_same_recipe(tmp_path, tiny_beir, tiny_model):
    ckpt = train(config(tmp_path, tiny_beir, tiny_model, None, sae="vocab", layer=2, steps=2, mode="zero-shot"))
    info = json.loads((ckpt / "splare.json").read_text())
    assert info["projection"] == "vocab" and info["vocab_k"] == 32 and not (ckpt / "sae").exists()
    encoder = SaeSparseEncoder(EncoderSettings(model=str(ckpt)))
    assert encoder.settings.sae == "vocab" and encoder.model.dim == encoder.tokenizer.vocab_size
    vector = encoder.encode_documents(["protein folding in yeast"])[0]
    assert vector and max(int(t[1:]) for t in vector) < encoder.tokenizer.vocab_size


def test_twin_trained_with_another_k_loads_with_that_k(tmp_path, tiny_beir, tiny_model):
    ckpt = train(config(tmp_path, tiny_beir, tiny_model, None, sae="vocab", layer=2, steps=1, vocab_k=5,
                        pooling="sum"))
    assert read_checkpoint(str(ckpt)).vocab_k == 5 and read_checkpoint(str(ckpt)).pooling == "sum"
    encoder = SaeSparseEncoder(str(ckpt))
    assert encoder.model.projection.k == 5 and encoder.settings.pooling == "sum"
    with torch.inference_mode():
        batch = encoder.tokenize(["protein"])  # one real token: at most k terms
        assert int((encoder.model(**batch) > 0).sum()) <= 5 * int(batch["token_mask"].sum())


def test_training_with_pruning_sees_the_cut_and_records_it(tmp_path, tiny_beir, tiny_model, tiny_sae):
    trainer = Trainer(config(tmp_path, tiny_beir, tiny_model, tiny_sae, topk=6, query_topk=3, steps=2))
    record = trainer.train_step()  # the loss saw pruned vectors: what encoding will write
    assert 0 < record["nnz_d"] <= 6 and 0 < record["nnz_q"] <= 3
    ckpt = trainer.fit()
    assert (read_checkpoint(str(ckpt)).topk, read_checkpoint(str(ckpt)).query_topk) == (6, 3)
    encoder = SaeSparseEncoder(str(ckpt))
    assert (encoder.settings.topk, encoder.settings.query_topk) == (6, 3)
    assert max(len(v) for v in encoder.encode_documents(["protein folding in yeast cells and their chaperones"])) == 6


def test_training_with_fewer_latents_per_token_records_them(tmp_path, tiny_beir, tiny_model, tiny_sae):
    trainer = Trainer(config(tmp_path, tiny_beir, tiny_model, tiny_sae, token_k=2, steps=2))
    assert trainer.encoder.model.token_k == 2  # the loss sees what encoding will write
    ckpt = trainer.fit()
    assert read_checkpoint(str(ckpt)).token_k == 2
    encoder = SaeSparseEncoder(str(ckpt))
    assert encoder.settings.token_k == 2 and encoder.info()["token_k"] == 2
    batch = encoder.tokenize(["protein folding in yeast cells"])
    assert 0 < int((encoder.model(**batch) > 0).sum()) <= 2 * int(batch["token_mask"].sum())
    full = SaeSparseEncoder(str(ckpt), token_k=encoder.model.projection.cfg.k)  # the SAE's own k overrides K
    assert full.settings.token_k == full.model.projection.cfg.k
    assert SaeSparseEncoder(full.settings).settings.token_k == full.settings.token_k  # and loads back as itself


def test_vocab_projection_keeps_k_terms_per_token():
    from splare_pyserini.model.projection import VocabProjection

    torch.manual_seed(0)
    projection = VocabProjection(torch.nn.Embedding(50, 8), k=3)
    x = torch.randn(4, 8, requires_grad=True)
    z = projection.encode(x)
    assert z.shape == (4, 50) and ((z > 0).sum(1) <= 3).all() and (z >= 0).all()
    logits = x @ projection.embeddings.weight.T
    top = logits.topk(3, dim=1)
    torch.testing.assert_close(z.gather(1, top.indices), torch.relu(top.values))
    z.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_trained_sae_is_saved_into_the_checkpoint(tmp_path, tiny_beir, tiny_model, tiny_sae, base_encoder):
    ckpt = train(config(tmp_path, tiny_beir, tiny_model, tiny_sae, train_sae=True, lr=1e-2, steps=2))
    cfg = json.loads((ckpt / "sae" / "cfg.json").read_text())
    assert cfg["dtype"] == "float16" and "sae" not in json.loads((ckpt / "splare.json").read_text())
    tuned = SaeSparseEncoder(str(ckpt))
    assert tuned.settings.sae == str(ckpt / "sae")
    assert not torch.allclose(tuned.model.projection.W_enc, base_encoder.model.projection.W_enc, atol=1e-3)
    assert tuned.encode_documents(["protein folding in yeast"])[0]


def test_a_frozen_shipped_sae_is_referenced_by_name(tmp_path, tiny_beir, tiny_model, tiny_sae, monkeypatch,
                                                   base_encoder):
    from splare_pyserini.model import artifacts

    shipped_root = tmp_path / "shipped"
    build_tiny_sae(shipped_root / "tiny-shipped-sae", model_name=str(tiny_model))
    monkeypatch.setattr(artifacts, "SHIPPED_MODELS", shipped_root)
    ckpt = train(config(tmp_path, tiny_beir, tiny_model, "tiny-shipped-sae", steps=2))
    info = json.loads((ckpt / "splare.json").read_text())
    assert info["sae"] == "tiny-shipped-sae" and not (ckpt / "sae").exists()
    tuned = SaeSparseEncoder(str(ckpt))
    assert tuned.settings.sae == "tiny-shipped-sae" and tuned.settings.quant_scale == info["quant_scale"]
    torch.testing.assert_close(tuned.model.projection.W_enc, base_encoder.model.projection.W_enc)
    assert not torch.equal(state(tuned)[BLOCK], state(base_encoder)[BLOCK])


@pytest.mark.parametrize("distill", ["kl", "margin-mse"])
def test_distillation_from_a_dense_teacher(tmp_path, tiny_beir, tiny_model, tiny_sae, distill):
    trainer = Trainer(config(tmp_path, tiny_beir, tiny_model, tiny_sae, distill=distill, teacher=str(tiny_model),
                             steps=2))
    scores = trainer.teacher_scores(["protein folding", "gene editing"], ["a", "b", "c", "d"])
    assert scores.shape == (2, 4) and float(scores.abs().max()) <= 1 + 1e-5  # cosines
    ckpt = trainer.fit()
    records = [json.loads(line) for line in (ckpt / "training_log.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(math.isfinite(r["distill"]) for r in records)
    assert json.loads((ckpt / "splare.json").read_text())["training"]["distill"] == distill


def test_in_memory_negatives_are_the_hard_negatives(tmp_path, tiny_beir, tiny_model, tiny_sae):
    negatives = InMemoryNegatives({f"what is known about {t}": [f"d{i}-0", f"d{i}-2", f"d{i}-1"]
                                   for i, t in enumerate(TOPICS)})
    trainer = Trainer(config(tmp_path, tiny_beir, tiny_model, tiny_sae), negatives=negatives)
    assert all(p.negatives == [f"d{p.positive_id[1]}-2", f"d{p.positive_id[1]}-1"] for p in trainer.pairs)
    batch = trainer.sampler.next_batch()
    allowed = {trainer.sources[0].docs[d] for p in trainer.pairs for d in p.negatives}
    assert set(batch.documents[4:]) <= allowed


def test_the_sae_fit_term_is_the_saes_unexplained_variance_added_to_the_loss(tmp_path, tiny_beir, tiny_model,
                                                                              tiny_sae):
    from splare_pyserini.training.sae import reconstruction_stats

    trainer = Trainer(config(tmp_path / "r", tiny_beir, tiny_model, tiny_sae, recon_weight=2.0, steps=2))
    model = trainer.encoder.model
    assert model.recon_tokens == 1024
    batch = trainer.encoder.tokenize(["protein folding in yeast cells", "sleep and memory in older adults"])
    with torch.no_grad():
        states = model.backbone(batch["input_ids"], batch["attention_mask"])[batch["token_mask"].bool()]
        ev = reconstruction_stats(model.projection, states)["explained_variance"]  # what training.json reports
        assert abs(float(model.sae_fvu(states)) - (1 - ev)) < 1e-4
    ckpt = trainer.fit()
    with_term = [json.loads(line) for line in (ckpt / "training_log.jsonl").read_text().splitlines()]
    without = [json.loads(line) for line in (train(config(tmp_path / "n", tiny_beir, tiny_model, tiny_sae, steps=2))
                                             / "training_log.jsonl").read_text().splitlines()]
    assert all(row["fvu"] > 0 for row in with_term) and all("fvu" not in row for row in without)
    # the first step sees the same batch and weights: the losses differ by exactly weight x the term
    assert abs(with_term[0]["loss"] - without[0]["loss"] - 2.0 * with_term[0]["fvu"]) < 5e-4
    assert json.loads((ckpt / "splare.json").read_text())["training"]["recon_weight"] == 2.0


@pytest.mark.parametrize("argv,message", [
    (["--distill", "mse"], "distill: 'mse' is not one of kl, margin-mse"),
    (["--mode", "few-shot"], "mode: 'few-shot' is not one of in-domain, zero-shot"),
    (["--negatives", "missing.jsonl"], "negatives: 'missing.jsonl' is not one of bm25, none nor a JSONL file"),
    (["--steps", "0"], "steps: must be >= 1, got 0"),
    (["--sae", "vocab", "--train-sae"], "train_sae: the vocabulary twin has no SAE to train"),
    (["--sae", "vocab", "--recon-weight", "1"], "recon_weight: the vocabulary twin has no SAE to reconstruct with"),
    (["--recon-weight", "-1"], "recon_weight: must be >= 0, got -1.0"),
])
def test_bad_settings_are_one_line_errors_before_any_model_loads(tmp_path, monkeypatch, capsys, argv, message):
    from splare_pyserini.model import backbone, encoder
    from splare_pyserini.training import trainer

    monkeypatch.setattr(trainer, "SaeSparseEncoder", fail_if_called("SaeSparseEncoder"))
    monkeypatch.setattr(trainer, "load_sources", fail_if_called("load_sources"))
    monkeypatch.setattr(encoder, "load_backbone", fail_if_called("load_backbone"))
    monkeypatch.setattr(backbone, "load_backbone", fail_if_called("load_backbone"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        trainer.cli(["--output", str(tmp_path / "run"), *argv])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: " + message]
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_bm25_negatives_work_from_a_script_without_main_guard(tmp_path, tiny_beir):
    """The JVM runs in a child interpreter; a multiprocessing spawn would re-run such a script forever."""
    import subprocess
    import sys

    script = tmp_path / "mine.py"
    script.write_text(
        "from splare_pyserini.training.negatives import BM25Negatives, attach_negatives\n"
        "from splare_pyserini.training.pairs import supervised_pairs\n"
        f"pairs = supervised_pairs({str(tiny_beir)!r}, 'train')\n"
        f"attach_negatives(pairs, BM25Negatives({str(tiny_beir)!r}, {str(tmp_path / 'cache')!r}, depth=5), depth=5)\n"
        "print(sum(bool(p.negatives) for p in pairs), len(pairs))\n"
        "assert all(p.positive_id not in p.negatives for p in pairs)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["10", "10"]


def save_one_step_state(cfg, edit) -> None:
    """Train one step, save the state, and ``edit`` the config recorded in it (as another run wrote it)."""
    first = Trainer(cfg)
    first.log.append(first.train_step())
    first.save_state()
    path = Path(cfg.output) / "state" / "state.pt"
    saved = torch.load(path, weights_only=False)
    edit(saved["config"])
    torch.save(saved, path)


def test_a_state_saved_before_a_setting_existed_resumes_only_at_its_default(tmp_path, tiny_beir, tiny_model,
                                                                              tiny_sae):
    from splare_pyserini.errors import InputError

    cfg = config(tmp_path, tiny_beir, tiny_model, tiny_sae, steps=2)
    save_one_step_state(cfg, lambda c: [c.pop("attention"), c.pop("lora_export")])  # as an older version wrote it
    assert Trainer(cfg).load_state()
    with pytest.raises(InputError, match="saved by a run with other settings"):
        Trainer(config(tmp_path, tiny_beir, tiny_model, tiny_sae, steps=2, attention="bidirectional")).load_state()


def test_a_state_resumes_on_another_device_but_not_with_another_recipe(tmp_path, tiny_beir, tiny_model, tiny_sae):
    from splare_pyserini.errors import InputError

    cfg = config(tmp_path, tiny_beir, tiny_model, tiny_sae, steps=2)
    # as a GPU run wrote it: the device is where a run computes, not what it trains
    save_one_step_state(cfg, lambda c: c.update(device="cuda"))
    moved = Trainer(cfg)
    assert moved.load_state() and moved.step == 1
    with pytest.raises(InputError, match="saved by a run with other settings"):
        Trainer(config(tmp_path, tiny_beir, tiny_model, tiny_sae, steps=2, lr=1e-3)).load_state()
