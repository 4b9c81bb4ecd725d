"""Decoder backbones (Llama as SmolLM2, Gemma-3 text): causal runs are transformers' own, bidirectional
attention is full attention over real tokens (checked against a hand computation), padding changes
nothing, the beginning-of-sequence sink is never pooled, and the encoder paths agree."""
import json
import math
import shutil

import pytest
import torch
from transformers import AutoModel

from helpers import build_tiny_decoder, build_tiny_sae
from splare_pyserini.errors import ArtifactError
from splare_pyserini.model.backbone import LayerBackbone, load_backbone
from splare_pyserini.model.encoder import SaeSparseEncoder

KINDS = ("llama", "gemma3")
SHORT = "what is known about malaria vaccine"
LONG = "we examine stem cells in cohort a and the results were significant further work on gene editing is needed"


@pytest.fixture(scope="module", params=KINDS)
def decoder(request, tmp_path_factory):
    return request.param, build_tiny_decoder(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def decoder_sae(decoder, tmp_path_factory):
    kind, path = decoder
    return build_tiny_sae(tmp_path_factory.mktemp(f"{kind}-sae"), layer=2, model_name=str(path))


def hand_block(model, block, x: torch.Tensor, kind: str) -> torch.Tensor:
    """One decoder block by hand with full (unmasked) softmax attention, from the block's own weights."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attn, T = block.self_attn, x.shape[1]
    positions = torch.arange(T)[None]
    if kind == "gemma3":
        cos, sin = model.rotary_emb(x, positions, model.config.layer_types[0])
        h = block.input_layernorm(x)
    else:
        cos, sin = model.rotary_emb(x, positions)
        h = block.input_layernorm(x)
    hd = attn.head_dim
    q = attn.q_proj(h).view(1, T, -1, hd).transpose(1, 2)
    k = attn.k_proj(h).view(1, T, -1, hd).transpose(1, 2)
    v = attn.v_proj(h).view(1, T, -1, hd).transpose(1, 2)
    if kind == "gemma3":
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scale = attn.scaling if kind == "gemma3" else 1 / math.sqrt(hd)
    weights = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)  # no mask: every token sees every token
    out = attn.o_proj((weights @ v).transpose(1, 2).reshape(1, T, -1))
    if kind == "gemma3":
        h = x + block.post_attention_layernorm(out)
        return h + block.post_feedforward_layernorm(block.mlp(block.pre_feedforward_layernorm(h)))
    h = x + out
    return h + block.mlp(block.post_attention_layernorm(h))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@torch.no_grad()
def test_bidirectional_block_is_full_attention_by_hand(tmp_path, kind, implementation):
    # one block; Gemma-3's is a sliding-window layer of window 2, which bidirectional attention must not keep
    path = build_tiny_decoder(tmp_path / kind, kind, layers=1, sliding_window=2)
    model = AutoModel.from_pretrained(path, attn_implementation=implementation).eval()
    backbone = LayerBackbone(model, 1, attention="bidirectional")
    ids = torch.tensor([[2, 5, 9, 14, 20, 27, 31], [2, 11, 6, 0, 0, 0, 0]])
    mask = (torch.arange(7)[None] < torch.tensor([[7], [3]])).long()
    got = backbone(ids, mask)
    for row, n in enumerate((7, 3)):  # a padded row is its text alone: pads are neither seen nor counted
        expected = hand_block(model, model.layers[0], model.embed_tokens(ids[row:row + 1, :n]), kind)
        torch.testing.assert_close(got[row:row + 1, :n], expected, atol=1e-5, rtol=1e-4)
    causal = LayerBackbone(AutoModel.from_pretrained(path, attn_implementation=implementation).eval(), 1)(ids, mask)
    assert not torch.allclose(causal[0, :3], got[0, :3], atol=1e-3)  # the hand computation tells them apart
    if kind == "llama":  # the last token sees every token either way; Gemma's window of 2 hides most of them
        torch.testing.assert_close(causal[0, -1], got[0, -1], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_a_token_depends_on_later_tokens_only_when_bidirectional(decoder):
    _, path = decoder
    ids = torch.tensor([[2, 5, 9, 14, 20], [2, 5, 9, 14, 33]])  # differ in the last token only
    mask = torch.ones_like(ids)
    causal = LayerBackbone(AutoModel.from_pretrained(path).eval(), 3)(ids, mask)
    bidirectional = LayerBackbone(AutoModel.from_pretrained(path).eval(), 3, attention="bidirectional")(ids, mask)
    torch.testing.assert_close(causal[0, :4], causal[1, :4])
    assert (bidirectional[0, :4] - bidirectional[1, :4]).abs().amax(dim=-1).min() > 1e-4


@torch.no_grad()
def test_causal_is_transformers_own_forward_and_no_final_norm(decoder):
    _, path = decoder
    ids = torch.tensor([[2, 5, 9, 14, 20, 27], [2, 11, 6, 8, 0, 0]])
    mask = (ids != 0).long()
    reference = AutoModel.from_pretrained(path).eval()
    out = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    for layer in (1, 2):  # middle layers: hidden_states[layer] exactly, nothing after the block runs
        got = LayerBackbone(AutoModel.from_pretrained(path).eval(), layer)(ids, mask)
        torch.testing.assert_close(got[real], out.hidden_states[layer][real])
    last = LayerBackbone(AutoModel.from_pretrained(path).eval(), 3)(ids, mask)
    assert not torch.allclose(last[real], out.last_hidden_state[real], atol=1e-3)  # the final norm did not run
    torch.testing.assert_close(reference.norm(last)[real], out.last_hidden_state[real])


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_a_text_alone_and_padded_in_a_batch_gives_the_same_latents(decoder, decoder_sae, attention):
    _, path = decoder
    encoder = SaeSparseEncoder(str(path), sae=str(decoder_sae), attention=attention, max_length=64)
    assert encoder.settings.attention == attention and encoder.tokenizer.padding_side == "right"
    alone = encoder.pooled_weights([SHORT])
    batched = encoder.pooled_weights([LONG, SHORT])  # SHORT is padded to LONG's length
    torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-5)
    assert encoder.encode_documents([SHORT]) == encoder.encode_documents([LONG, SHORT], batch_size=2)[1:]
    assert encoder.info()["attention"] == attention


@torch.no_grad()
def test_the_beginning_of_sequence_sink_is_never_pooled(decoder, decoder_sae):
    kind, path = decoder
    encoder = SaeSparseEncoder(str(path), sae=str(decoder_sae), max_length=64)
    batch = encoder.tokenize([SHORT, "stem cells"])
    # SmolLM2-like tokenizers add nothing: the batcher puts <bos> first; Gemma's tokenizer adds it itself
    assert encoder.batcher.prepend == (2 if kind == "llama" else None)
    assert batch["input_ids"][:, 0].tolist() == [2, 2] and not batch["token_mask"][:, 0].any()
    assert batch["token_mask"].sum(1).tolist() == [len(SHORT.split()), 2]
    hidden = encoder.model.backbone(batch["input_ids"], batch["attention_mask"])[0, 1:len(SHORT.split()) + 1]
    by_hand = torch.log1p(torch.relu(encoder.model.projection.encode(hidden).amax(0)))
    torch.testing.assert_close(encoder.pooled_weights([SHORT])[0], by_hand, atol=1e-5, rtol=1e-5)
    assert encoder.token_lengths([SHORT])[0] == len(SHORT.split()) + 1
    assert encoder.tokenize(["stem " * 300], query=True)["input_ids"].shape[1] == encoder.settings.query_max_length


@torch.no_grad()
def test_topk_fast_path_equals_sae_lens_encode_on_decoder_states(decoder, decoder_sae):
    _, path = decoder
    encoder = SaeSparseEncoder(str(path), sae=str(decoder_sae), attention="bidirectional", max_length=64)
    batch = encoder.tokenize([SHORT, LONG])
    hidden = encoder.model.backbone(batch["input_ids"], batch["attention_mask"])
    tokens, lengths = hidden[batch["token_mask"]], batch["token_mask"].sum(1).tolist()
    from splare_pyserini.model.projection import topk_plan

    fast = encoder.model.pool_topk(topk_plan(encoder.model.projection), tokens, lengths)
    torch.testing.assert_close(fast, encoder.model.pool_dense(tokens, lengths), atol=1e-5, rtol=1e-5)


def test_half_precision_backbones_encode_close_to_float32(decoder, decoder_sae):
    _, path = decoder
    full = SaeSparseEncoder(str(path), sae=str(decoder_sae), attention="bidirectional").pooled_weights([LONG])
    for dtype in ("bfloat16", "float16"):
        half = SaeSparseEncoder(str(path), sae=str(decoder_sae), attention="bidirectional", dtype=dtype)
        assert next(half.model.backbone.parameters()).dtype == getattr(torch, dtype)
        got = half.pooled_weights([LONG])
        assert got.dtype == torch.float32 and (got - full).abs().max() < 0.1 * full.max()


def test_a_float16_overflow_is_an_error_not_nan_vectors(tmp_path):
    path = build_tiny_decoder(tmp_path / "loud", "gemma3")
    sae = build_tiny_sae(tmp_path / "sae", layer=2, model_name=str(path))
    model = AutoModel.from_pretrained(path)
    with torch.no_grad():
        model.embed_tokens.weight.mul_(5e5)  # weights fit float16, Gemma's scaled embeddings do not
    model.save_pretrained(path)
    with pytest.raises(ArtifactError, match="overflows float16 by layer 2.*use bfloat16"):
        SaeSparseEncoder(str(path), sae=str(sae), dtype="float16").encode_documents([LONG])
    assert SaeSparseEncoder(str(path), sae=str(sae), dtype="bfloat16").encode_documents([LONG])[0]


def test_causal_attention_is_refused_for_an_encoder_and_unknown_modes(tiny_model, decoder):
    with pytest.raises(ArtifactError, match="is not a decoder"):
        load_backbone(str(tiny_model), 2, attention="causal")
    with pytest.raises(ArtifactError, match="attention: 'sideways'"):
        LayerBackbone(AutoModel.from_pretrained(decoder[1]), 2, attention="sideways")
    _, bert = load_backbone(str(tiny_model), 2, attention="bidirectional")  # an encoder's own: nothing changes
    assert bert.attention == "bidirectional" and not bert.bidirectional_decoder and bert.prepend_id is None


def test_the_sae_records_attention_and_its_encoders_default_to_it(tmp_path, decoder):
    from helpers import write_jsonl
    from splare_pyserini.training.sae import TrainSaeConfig, train_sae

    _, path = decoder
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"_id": str(i), "text": f"{SHORT} {LONG} {i}"} for i in range(8)])
    sae = train_sae(TrainSaeConfig(input=str(texts), output=str(tmp_path / "sae"), model=str(path), layer=2,
                                   d_sae=64, k=4, steps=3, batch_size=32, attention="bidirectional"))
    encoder = SaeSparseEncoder(str(path), sae=str(sae))
    assert encoder.settings.attention == "bidirectional" and encoder.model.backbone.bidirectional_decoder
    assert SaeSparseEncoder(str(path), sae=str(sae), attention="causal").settings.attention == "causal"



def test_a_lora_decoder_checkpoint_holds_the_adapter_and_reloads_as_trained(tmp_path, decoder, decoder_sae):
    from safetensors.torch import load_file, save_file

    from helpers import build_tiny_beir
    from splare_pyserini.model.checkpoint import read_checkpoint
    from splare_pyserini.train import TrainConfig, Trainer

    kind, path = decoder
    cfg = TrainConfig(dataset=str(build_tiny_beir(tmp_path / "beir")), output=str(tmp_path / "run"), model=str(path),
                      sae=str(decoder_sae), attention="bidirectional", lora_rank=4, lr=1e-2, steps=3, batch_size=4,
                      warmup_steps=1, flops_warmup=2, doc_max_length=32, query_max_length=16, negatives="none")
    trainer = Trainer(cfg)
    ckpt = trainer.fit()
    assert sorted(p.name for p in ckpt.iterdir()) == ["adapter.safetensors", "sae", "splare.json",
                                                      "training_log.jsonl"]
    adapter = load_file(str(ckpt / "adapter.safetensors"))
    assert adapter and all("lora_A" in n or "lora_B" in n for n in adapter)
    assert {n.split(".")[1] for n in adapter} == {"0", "1"}  # the blocks up to the SAE's layer 2 only
    info = read_checkpoint(str(ckpt))
    assert info.base_model == str(path) and info.attention == "bidirectional" and info.lora["rank"] == 4
    tuned = SaeSparseEncoder(str(ckpt))
    assert tuned.settings.attention == "bidirectional" and tuned.model.backbone.bidirectional_decoder
    assert not any("lora_" in n for n in tuned.model.state_dict())  # merged at load: a plain model
    texts = [SHORT, LONG]
    with torch.inference_mode():  # the merged adapter encodes as the adapted model did (fp16 adapter)
        torch.testing.assert_close(tuned.pooled_weights(texts), trainer.encoder.pooled_weights(texts),
                                   atol=2e-2, rtol=2e-2)
    base = SaeSparseEncoder(str(path), sae=str(decoder_sae), attention="bidirectional").pooled_weights(texts)
    assert (tuned.pooled_weights(texts) - base).abs().max() > 1e-3  # the adapter did change the model
    # the adapter on another base (one weight changed) is refused, not silently wrong
    changed, moved = tmp_path / "changed-base", tmp_path / "moved"
    shutil.copytree(path, changed)
    shutil.copytree(ckpt, moved)
    weights = load_file(str(path / "model.safetensors"))
    weights["layers.0.self_attn.q_proj.weight"] += 1
    save_file(weights, str(changed / "model.safetensors"), metadata={"format": "pt"})
    data = json.loads((moved / "splare.json").read_text())
    (moved / "splare.json").write_text(json.dumps({**data, "base_model": str(changed)}))
    with pytest.raises(ArtifactError, match="LoRA adapter was trained on .* content hash"):
        SaeSparseEncoder(str(moved))


def test_a_jumprelu_sae_trains_and_encodes_through_sae_lens_own_encode(tmp_path, decoder):
    from helpers import write_jsonl
    from splare_pyserini.model.projection import topk_plan
    from splare_pyserini.training.sae import TrainSaeConfig, train_sae

    _, path = decoder
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"_id": str(i), "text": f"{LONG} {SHORT} {i}"} for i in range(8)])
    sae = train_sae(TrainSaeConfig(input=str(texts), output=str(tmp_path / "sae"), model=str(path), layer=2,
                                   d_sae=64, k=8, steps=4, batch_size=32, architecture="jumprelu", fp32=True))
    assert json.loads((sae / "cfg.json").read_text())["architecture"] == "jumprelu"
    assert (sae / "README.md").read_text().startswith("# JumpReLU SAE")
    encoder = SaeSparseEncoder(str(path), sae=str(sae), max_length=64)
    assert topk_plan(encoder.model.projection) is None  # no TopK fast path: sae-lens's encode
    batch = encoder.tokenize([LONG])
    with torch.no_grad():
        hidden = encoder.model.backbone(batch["input_ids"], batch["attention_mask"])[batch["token_mask"]]
        latents = encoder.model.projection.encode(hidden)
    assert (latents > 0).any(dim=1).all()  # every token has active latents past their thresholds
    torch.testing.assert_close(encoder.pooled_weights([LONG])[0], torch.log1p(torch.relu(latents)).amax(0))


def test_a_mean_initialized_decoder_bias_fits_states_with_a_large_offset(tmp_path, tiny_model):
    from splare_pyserini.training.sae import TrainSaeConfig, train_sae

    path = tiny_model  # the states are given: the backbone only names the hook
    generator = torch.Generator().manual_seed(0)
    acts = torch.randn(4096, 32, generator=generator)
    acts[:, :2] += 30.0  # constant offsets in a few dimensions, as LLM residual streams carry
    explained = {}
    for init in ("zeros", "mean", "auto"):
        sae = train_sae(TrainSaeConfig(input="unused", output=str(tmp_path / init), model=str(path), layer=2,
                                       d_sae=64, k=4, steps=5, batch_size=256, b_dec_init=init, fp32=True),
                        activations=acts)
        record = json.loads((sae / "training.json").read_text())
        assert record["b_dec_init"] == ("mean" if init == "auto" else init)  # auto: the offset is most of the norm
        assert record["b_dec_init_asked"] == init
        assert record["mean_state_share"] == pytest.approx(float(acts.mean(0).pow(2).sum() / acts.pow(2).sum(1).mean()),
                                                           abs=1e-4)
        assert record["mean_state_share"] > 0.9  # 2 x 30^2 of offset against 32 of noise per state
        assert "the mean state carries" in (sae / "README.md").read_text()
        explained[init] = record["explained_variance"]
    assert explained["mean"] > 0 > explained["zeros"]
    assert explained["auto"] == explained["mean"]
    centred = train_sae(TrainSaeConfig(input="unused", output=str(tmp_path / "centred"), model=str(path), layer=2,
                                       d_sae=64, k=4, steps=1, batch_size=256, fp32=True),
                        activations=acts - acts.mean(0))
    record = json.loads((centred / "training.json").read_text())
    assert (record["b_dec_init_asked"], record["b_dec_init"]) == ("auto", "zeros")  # the default, below the share
    assert record["mean_state_share"] < 1e-6
    # between the two: a fifth of the norm in the mean (SmolLM2's middle layer carries 0.23) starts at the mean,
    # a twentieth (MiniLM's layer 6: 0.04) at zero
    for offset, share, start in ((2.0, 0.2, "mean"), (0.9, 0.05, "zeros")):
        shifted = acts - acts.mean(0)
        shifted[:, :2] += offset  # 2 offset^2 against 32 of noise
        sae = train_sae(TrainSaeConfig(input="unused", output=str(tmp_path / f"share-{share}"), model=str(path),
                                       layer=2, d_sae=64, k=4, steps=1, batch_size=256, fp32=True), activations=shifted)
        record = json.loads((sae / "training.json").read_text())
        assert record["mean_state_share"] == pytest.approx(share, abs=0.01) and record["b_dec_init"] == start


def test_latent_attribution_reads_the_states_encoding_pooled(decoder, decoder_sae):
    from splare_pyserini.model.attribution import text_activations

    _, path = decoder
    encoder = SaeSparseEncoder(str(path), sae=str(decoder_sae), max_length=64)
    (acts,) = text_activations(encoder, [SHORT])
    assert acts.tokens == SHORT.split()  # the <bos> sink is not a token of the text
    pooled = encoder.pooled_weights([SHORT])[0]
    fired = torch.nonzero(pooled).flatten().tolist()
    assert fired and sorted(acts.peaks) == fired
    for latent in fired:
        assert acts.weight(latent) == pytest.approx(float(pooled[latent]), rel=1e-5, abs=1e-6)
