"""The Python API: sentence-transformers-style encode_queries / encode_documents / decode, Pyserini-style
encoder pair, shipped names, and artifacts compared by content."""
import json
import shutil

import pytest
import torch

from splare_pyserini.datasets import TextRecord
from splare_pyserini.encode import encode_queries
from splare_pyserini.errors import ArtifactError, InputError
from splare_pyserini.model.artifacts import content_hash, resolve_path, shipped_names
from splare_pyserini.model.encoder import SaeSparseEncoder
from splare_pyserini.model.quantize import quantize
from splare_pyserini.model.settings import DEFAULT_MODEL, DEFAULT_SAE, EncoderSettings

TEXTS = ["protein folding in yeast", "a much longer text about gut microbiome studies in mice and men " * 3, ""]


def test_query_settings_are_applied_by_the_api_as_by_the_cli(tmp_path, tiny_encoder):
    encoder = SaeSparseEncoder(tiny_encoder.settings.replace(query_max_length=8, query_topk=5))
    encode_queries([TextRecord(str(i), t) for i, t in enumerate(TEXTS)], tmp_path, encoder)
    written = [json.loads(line)["vector"] for line in (tmp_path / "queries.jsonl").read_text().splitlines()]
    assert encoder.encode_queries(TEXTS) == written
    assert all(len(v) <= 5 for v in written) and written[0]
    documents = encoder.encode_documents(TEXTS)
    assert documents != written and max(len(v) for v in documents) > 5  # the document side keeps its own
    info = json.loads((tmp_path / "encode_info.json").read_text())
    assert (info["query_max_length"], info["query_topk"], info["queries"]["max_length"]) == (8, 5, 8)


def test_positional_model_and_overrides(tiny_model, tiny_sae):
    encoder = SaeSparseEncoder(str(tiny_model), sae=str(tiny_sae), topk=3)
    assert encoder.settings.model == str(tiny_model) and encoder.settings.topk == 3
    assert all(len(v) <= 3 for v in encoder.encode_documents(TEXTS))
    same = SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(tiny_sae)), topk=3)
    assert same.settings == encoder.settings


def test_decode_gives_latent_ids_and_weights_largest_first(tiny_encoder):
    vector = tiny_encoder.encode_documents(TEXTS[:1])[0]
    decoded = tiny_encoder.decode(vector)
    assert {f"L{i}": int(w) for i, w in decoded} == vector
    assert [w for _, w in decoded] == sorted((w for _, w in decoded), reverse=True)
    assert tiny_encoder.decode(vector, top_k=2) == decoded[:2]
    weights = tiny_encoder.pooled_weights(TEXTS[:1])[0]
    from_tensor = tiny_encoder.decode(weights)
    assert [i for i, _ in from_tensor] == [i for i, _ in sorted(((i, float(weights[i])) for i in
                                                                 torch.nonzero(weights).flatten().tolist()),
                                                                key=lambda p: (-p[1], p[0]))]


def test_pyserini_encoder_pair(tiny_encoder):
    from splare_pyserini import SaeDocumentEncoder, SaeQueryEncoder

    query = SaeQueryEncoder(tiny_encoder)
    assert query.encode("protein  folding\tin yeast") == tiny_encoder.encode_queries(["protein folding in yeast"])[0]
    docs = SaeDocumentEncoder(tiny_encoder)
    assert docs.encode(["folding in yeast"], titles=["Protein"]) == tiny_encoder.encode_documents(
        ["Protein folding in yeast"])


def test_shipped_names_resolve_offline():
    assert {DEFAULT_MODEL, DEFAULT_SAE} <= set(shipped_names())
    assert resolve_path(DEFAULT_SAE).endswith(f"resources/models/{DEFAULT_SAE}")
    assert resolve_path("org/not-shipped") == "org/not-shipped"


def test_content_hash_follows_content_not_path(tmp_path, tiny_sae):
    copy = shutil.copytree(tiny_sae, tmp_path / "elsewhere")
    assert content_hash(str(copy)) == content_hash(str(tiny_sae))
    (copy / "README.md").write_text("a model card does not change what the SAE computes")
    assert content_hash(str(copy)) == content_hash(str(tiny_sae))
    cfg = json.loads((copy / "cfg.json").read_text())
    cfg["k"] = 3
    (copy / "cfg.json").write_text(json.dumps(cfg))
    assert content_hash(str(copy)) != content_hash(str(tiny_sae))
    assert content_hash("org/hub-model") == "id:org/hub-model"


def test_splade_tiny_runs_as_a_vocabulary_system_offline():
    """The published vocabulary-SPLADE anchor: its own MLM head, SPLADE's max-pooled log(1 + relu(logits))."""
    encoder = SaeSparseEncoder("splade-tiny", sae="mlm")
    assert encoder.settings.layer == 2 and encoder.dim == encoder.tokenizer.vocab_size == 30522
    vector = encoder.encode_documents(["protein folding in yeast cells"])[0]
    top = [encoder.tokenizer.convert_ids_to_tokens(i) for i, _ in encoder.decode(vector, 5)]
    assert {"protein", "yeast", "folding"} <= set(top)
    assert encoder.info()["sae_hash"] == "mlm"
    latent = encoder.decode(vector, 1)[0][0]  # its latents are vocabulary terms, labelled by themselves
    assert encoder.latent_labels().label(latent) == top[0]


def test_windows_cut_a_long_document_evenly_and_max_pool_it(tiny_encoder):
    long_text = " ".join(f"word{i} protein folding yeast" for i in range(40))
    texts = [long_text, "protein folding in yeast", ""]
    encoder = SaeSparseEncoder(tiny_encoder.settings.replace(max_length=16, windows=3))
    items, owner, truncated = encoder.batcher.encode_windows(texts, 16, 3)
    assert owner == [0, 0, 0, 1, 2] and truncated == 1
    tokens = [encoder.tokenizer.convert_ids_to_tokens(ids) for ids, _ in items[:3]]
    assert all(t[0] == "[CLS]" and t[-1] == "[SEP]" and len(t) == 16 for t in tokens)  # 3 x 14 content tokens
    whole = encoder.tokenizer(long_text, add_special_tokens=False)["input_ids"]
    assert [i for ids, _ in items[:3] for i in ids[1:-1]] == whole[:42]  # consecutive, nothing repeated
    assert items[3:] == encoder.batcher.encode_all(texts[1:], 16)  # a text that fits is one plain window

    middle = " ".join(f"word{i}" for i in range(9))  # 18 content tokens: two windows of 9, not 14 + 4
    assert [len(ids) for ids, _ in encoder.batcher.encode_windows([middle], 16, 3)[0]] == [11, 11]

    vectors, counted = encoder.encode_with_stats(texts, batch_size=2)  # a text's windows in different batches
    pooled = torch.cat([encoder._pooled(encoder.batcher.collate([item])) for item in items[:3]]).max(dim=0).values
    s = encoder.settings
    assert vectors[0] == quantize(pooled[None], s.quant_scale, s.topk, s.prefix)[0] and counted == 1
    assert vectors[1:] == tiny_encoder.encode_documents(texts[1:])  # unchanged below one window
    assert encoder.encode_queries([long_text]) == tiny_encoder.encode_queries([long_text])  # documents only


def test_windows_need_max_pooling(tiny_encoder):
    with pytest.raises(ArtifactError, match="windows: 2 windows .* needs max pooling; this model pools by sum"):
        SaeSparseEncoder(tiny_encoder.settings.replace(pooling="sum", windows=2))
    with pytest.raises(InputError, match="windows: must be >= 1, got 0"):
        EncoderSettings(windows=0)
