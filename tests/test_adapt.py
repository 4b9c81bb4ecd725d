"""Masked next-token adaptation (LLM2Vec's MNTP) of a decoder to bidirectional attention: the masked token is
read from the state before it through the model's own LM head, the run learns, resumes exactly, and the
adapted folder loads everywhere as a bidirectional model."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from helpers import build_tiny_beir, build_tiny_decoder
from splare_pyserini.errors import ArtifactError, InputError
from splare_pyserini.model.backbone import ADAPTED_FILE, LayerBackbone, load_backbone
from splare_pyserini.training.adapt import AdaptConfig, Adapter, adapt, load_causal_lm, mask_tokens, mntp_loss

TEXTS = ["we examine stem cells in cohort a", "what is known about malaria vaccine and the results"]


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return str(build_tiny_beir(tmp_path_factory.mktemp("beir") / "tiny"))


def build_tiny_causal_lm(path, kind):
    """A tiny random decoder saved with its LM head (as the fetched LLMs are), so every load is the same model."""
    from transformers import AutoTokenizer

    base = build_tiny_decoder(path / "base", kind)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    with torch.no_grad():  # a trained head's scale: at the random init's, no state can make a confident guess
        model.get_output_embeddings().weight.normal_(0.0, 1.0)
    model.save_pretrained(path / "lm")
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(path / "lm")
    return path / "lm"


@pytest.fixture(scope="module", params=("llama", "gemma3"))
def decoder(request, tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp(request.param), request.param)


def test_masking_picks_only_real_tokens_after_the_first_and_labels_them():
    ids = torch.arange(40).view(2, 20)
    real = torch.ones(2, 20, dtype=torch.bool)
    real[1, 12:] = False  # padding
    masked, labels = mask_tokens(ids, real, mask_id=99, prob=0.5, generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert chosen.any() and not chosen[:, 0].any() and not chosen[1, 12:].any()
    assert torch.equal(labels[chosen], ids[chosen]) and (masked[chosen] == 99).all()
    assert torch.equal(masked[~chosen], ids[~chosen])
    only_first = torch.zeros(2, 20, dtype=torch.bool)
    only_first[:, :2] = True
    _, labels = mask_tokens(ids, only_first, 99, prob=1e-9, generator=torch.Generator().manual_seed(0))
    assert (labels != -100).sum() == 1  # at least one masked token per batch


def test_the_masked_token_is_read_from_the_state_before_it_through_the_models_own_head(decoder):
    tokenizer, model, backbone = load_causal_lm(str(decoder), "cpu")
    batch = tokenizer(TEXTS[:1], return_tensors="pt")
    ids = batch["input_ids"]
    # the readout (last block's state -> final norm -> LM head) is the causal LM's own forward, run causally
    reference = AutoModelForCausalLM.from_pretrained(str(decoder)).eval()
    with torch.no_grad():
        own = reference(input_ids=ids).logits
        causal = LayerBackbone(AutoModelForCausalLM.from_pretrained(str(decoder)).eval(),
                               reference.config.num_hidden_layers, attention="causal")
        hidden = causal(ids, batch["attention_mask"])
        readout = model.get_output_embeddings()(model.get_decoder().norm(hidden))
    assert torch.allclose(own, readout, atol=1e-5)
    # the loss is the LM's shifted cross-entropy (position i - 1 predicts token i) at the masked positions only
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[0, 4] = ids[0, 2], ids[0, 4]
    with torch.no_grad():
        loss = mntp_loss(hidden, labels, model.get_decoder().norm, model.get_output_embeddings(), None)
        expected = torch.nn.functional.cross_entropy(readout[:, :-1].reshape(-1, readout.shape[-1]),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert backbone.attention == "bidirectional" and backbone.bidirectional_decoder


def config(decoder, texts, output, **overrides):
    fields = dict(input=(texts,), output=str(output), model=str(decoder), steps=30, batch_size=8, lr=1e-2,
                  warmup_steps=0, lora_rank=4, mask_prob=0.3, max_length=32, save_every=10)
    return AdaptConfig(**{**fields, **overrides})


def test_adaptation_learns_and_the_folder_loads_bidirectional_by_default(tmp_path, decoder, texts):
    folder = adapt(config(decoder, texts, tmp_path / "adapted"))
    record = json.loads((folder / ADAPTED_FILE).read_text())
    assert record["attention"] == "bidirectional" and record["base_model"] == str(decoder)
    assert record["loss_last_10_steps"] < 0.8 * record["loss_first_10_steps"]  # it learns the masked tokens
    assert "masked next-token" in (folder / "README.md").read_text()
    _, adapted = load_backbone(str(folder), 2)
    _, base = load_backbone(str(decoder), 2, attention="bidirectional")
    assert adapted.attention == "bidirectional" and adapted.bidirectional_decoder  # its recorded default
    _, causal = load_backbone(str(folder), 2, attention="causal")  # still a decoder: causal on request
    assert causal.attention == "causal"
    tokenizer, _ = load_backbone(str(folder), 2)[0], None
    batch = tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(adapted(batch["input_ids"], batch["attention_mask"]),
                                  base(batch["input_ids"], batch["attention_mask"]), atol=1e-4)  # adapters merged
    assert adapt(config(decoder, texts, tmp_path / "adapted")) == folder  # done: not redone
    with pytest.raises(InputError, match="other settings"):
        adapt(config(decoder, texts, tmp_path / "adapted", steps=31))
    (folder / ADAPTED_FILE).write_text("{}")
    with pytest.raises(ArtifactError, match=f"{ADAPTED_FILE}: not an adaptation record"):
        load_backbone(str(folder), 2)


def test_an_interrupted_adaptation_resumes_to_the_same_model(tmp_path, texts):
    decoder = build_tiny_causal_lm(tmp_path, "llama")
    whole = adapt(config(decoder, texts, tmp_path / "whole", steps=6, save_every=2))
    killed = config(decoder, texts, tmp_path / "killed", steps=6, save_every=2)
    first = Adapter(killed)
    for _ in range(2):
        first.log.append(first.train_step())
    first.save_state()  # then the process "dies"
    resumed = adapt(killed)
    assert json.loads((resumed / ADAPTED_FILE).read_text())["resumed"] is True
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_adaptation_refuses_an_encoder_and_bad_settings(tmp_path, tiny_model, texts):
    with pytest.raises(InputError, match="not a decoder"):
        Adapter(AdaptConfig(input=(texts,), output=str(tmp_path / "x"), model=str(tiny_model)))
    with pytest.raises(InputError, match="mask_prob"):
        AdaptConfig(input=(texts,), output=str(tmp_path / "x"), model="m", mask_prob=0)
    with pytest.raises(InputError, match="steps"):
        AdaptConfig(input=(texts,), output=str(tmp_path / "x"), model="m", steps=0)
