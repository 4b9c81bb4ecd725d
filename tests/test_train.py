"""Retrieval fine-tuning (SPLARE recipe) on a tiny backbone: checkpoints, resume, vocabulary twin."""
import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import write_jsonl
from splare_pyserini.encoder import EncoderSettings, SaeSparseEncoder
from splare_pyserini.losses import contrastive_loss, flops, quadratic_warmup
from splare_pyserini.train import TrainConfig, Trainer, train

TOPICS = ["protein folding", "yeast genetics", "cancer immunotherapy", "gut microbiome", "malaria vaccine",
          "stem cells", "insulin resistance", "antibiotic resistance", "sleep deprivation", "gene editing"]


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-beir")
    docs, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for i, topic in enumerate(TOPICS):
        for j in range(3):
            docs.append({"_id": f"d{i}-{j}", "title": f"Study {j} of {topic}",
                         "text": f"We examine {topic} in cohort {j}. The {topic} results were significant. "
                                 f"Further work on {topic} is needed in sample {j}."})
        queries.append({"_id": f"q{i}", "text": f"what is known about {topic}"})
        qrels.append(f"q{i}\td{i}-0\t1")
    write_jsonl(root / "corpus.jsonl", docs)
    write_jsonl(root / "queries.jsonl", queries)
    (root / "qrels").mkdir()
    (root / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    return root


def config(tmp_path, tiny_beir, tiny_model, tiny_sae, **changes):
    base = dict(dataset=str(tiny_beir), output=str(tmp_path / "run"), model=str(tiny_model), sae=str(tiny_sae),
                steps=4, batch_size=4, warmup_steps=1, flops_warmup=2, doc_max_length=48, query_max_length=16,
                save_every=2)
    return TrainConfig(**{**base, **changes})


def test_losses():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[5.0, 0.0], [0.0, 5.0], [1.0, 1.0], [0.0, 0.0]])
    assert float(contrastive_loss(q, d)) < float(contrastive_loss(q, d.flip(0)))
    torch.testing.assert_close(contrastive_loss(q, d, temperature=5.0), contrastive_loss(q / 5.0, d))
    assert float(flops(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))) == pytest.approx(2.0 ** 2 + 1.0 ** 2)
    assert [quadratic_warmup(s, 10, 1.0) for s in (0, 5, 10, 20)] == [0.0, 0.25, 1.0, 1.0]


def test_training_changes_only_the_blocks_and_exports_a_checkpoint(tmp_path, tiny_beir, tiny_model, tiny_sae):
    ckpt = train(config(tmp_path, tiny_beir, tiny_model, tiny_sae))
    info = json.loads((ckpt / "splare.json").read_text())
    assert info["projection"] == "sae" and info["layer"] == 2 and info["quant_scale"] > 0
    weights = load_file(str(ckpt / "backbone.safetensors"))
    assert weights and all(k.startswith("encoder.layer.") for k in weights)
    assert all(v.dtype == torch.float16 for v in weights.values())
    assert {k.split(".")[2] for k in weights} == {"0", "1"}  # blocks up to layer 2 only
    base = SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(tiny_sae)))
    tuned = SaeSparseEncoder(EncoderSettings(model=str(ckpt)))
    assert tuned.settings.sae == str(ckpt / "sae") and tuned.settings.quant_scale == info["quant_scale"]
    block = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(tuned.model.backbone.model.state_dict()[block], base.model.backbone.model.state_dict()[block])
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(tuned.model.backbone.model.state_dict()[emb], base.model.backbone.model.state_dict()[emb])
    torch.testing.assert_close(tuned.model.sae.W_enc, base.model.sae.W_enc)  # the SAE stayed frozen
    assert len((ckpt / "training_log.jsonl").read_text().splitlines()) == 4


def test_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_beir, tiny_model, tiny_sae):
    whole = train(config(tmp_path / "a", tiny_beir, tiny_model, tiny_sae))
    cfg = config(tmp_path / "b", tiny_beir, tiny_model, tiny_sae)
    first = Trainer(cfg)
    for _ in range(2):
        first.log.append(first.train_step())
    first.save_state()  # then the process "dies"
    resumed = train(cfg)
    a, b = load_file(str(whole / "backbone.safetensors")), load_file(str(resumed / "backbone.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_trains_adapters_only_and_exports_merged_block_weights(tmp_path, tiny_beir, tiny_model, tiny_sae):
    cfg = config(tmp_path, tiny_beir, tiny_model, tiny_sae, lora_rank=4, lr=1e-2)
    trainer = Trainer(cfg)
    trainable = [n for n, p in trainer.encoder.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ckpt = trainer.fit()
    weights = load_file(str(ckpt / "backbone.safetensors"))
    base = SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(tiny_sae)))
    assert weights.keys() <= base.model.backbone.model.state_dict().keys()  # plain names: adapters merged
    tuned = SaeSparseEncoder(EncoderSettings(model=str(ckpt)))
    block = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(tuned.model.backbone.model.state_dict()[block], base.model.backbone.model.state_dict()[block])
    text = ["protein folding in yeast"]
    with torch.inference_mode():  # the merged checkpoint encodes as the adapted model did
        torch.testing.assert_close(tuned.model(**tuned.tokenize(text)), trainer.encoder.model(**tuned.tokenize(text)),
                                   atol=2e-2, rtol=2e-2)


def test_vocabulary_twin_trains_on_the_same_recipe(tmp_path, tiny_beir, tiny_model):
    ckpt = train(config(tmp_path, tiny_beir, tiny_model, None, sae="vocab", layer=2, steps=2, mode="zero-shot"))
    info = json.loads((ckpt / "splare.json").read_text())
    assert info["projection"] == "vocab" and not (ckpt / "sae").exists()
    encoder = SaeSparseEncoder(EncoderSettings(model=str(ckpt)))
    assert encoder.settings.sae == "vocab" and encoder.model.dim == encoder.tokenizer.vocab_size
    vector = encoder.encode(["protein folding in yeast"])[0]
    assert vector and max(int(t[1:]) for t in vector) < encoder.tokenizer.vocab_size


def test_vocab_projection_keeps_k_terms_per_token():
    from splare_pyserini.vocab import VocabProjection

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


def test_bm25_negatives_work_from_a_script_without_main_guard(tmp_path, tiny_beir):
    """The JVM runs in a child interpreter; a multiprocessing spawn would re-run such a script forever."""
    import subprocess
    import sys

    script = tmp_path / "mine.py"
    script.write_text(
        "from pathlib import Path\n"
        "from splare_pyserini.pairs import add_bm25_negatives, supervised_pairs\n"
        f"pairs = supervised_pairs({str(tiny_beir)!r}, 'train')\n"
        f"add_bm25_negatives(pairs, {str(tiny_beir)!r}, Path({str(tmp_path / 'cache')!r}), depth=5)\n"
        "print(sum(bool(p.negatives) for p in pairs), len(pairs))\n"
        "assert all(p.positive_id not in p.negatives for p in pairs)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["10", "10"]
