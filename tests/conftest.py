"""Shared fixtures: a tiny random backbone and SAE built in-process, and a real SciFact slice."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from splare_pyserini.backbone import DEFAULT_MODEL, resolve_model_path  # noqa: E402
from splare_pyserini.data import PACKAGED_BEIR, write_beir_slice  # noqa: E402

TINY_HIDDEN = 32
TINY_LAYERS = 3
TINY_LAYER = 2
TINY_D_SAE = 64


def build_tiny_bert(path: Path, hidden: int = TINY_HIDDEN) -> Path:
    """A random 3-layer BERT with the real MiniLM tokenizer (offline)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=TINY_LAYERS,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_sae(path: Path, d_in: int = TINY_HIDDEN, layer: int = TINY_LAYER, k: int = 8,
                   model_name: str = "tiny-bert") -> Path:
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    torch.manual_seed(1)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=TINY_D_SAE, k=k,
                        metadata=SAEMetadata(model_name=model_name, hook_name=f"encoder.layer.{layer - 1}"))
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 1.0)
        sae.b_enc.zero_()
    sae.save_model(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_sae(tmp_path_factory, tiny_model) -> Path:
    return build_tiny_sae(tmp_path_factory.mktemp("tiny-sae"), model_name=str(tiny_model))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model, tiny_sae):
    from splare_pyserini.encoder import EncoderSettings, SaeSparseEncoder

    return SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(tiny_sae), max_length=64))


def make_beir_slice(dest: Path, n_queries: int = 40, n_docs: int = 300, seed: int = 0) -> Path:
    """A BEIR folder: the first n test queries of the shipped SciFact, their relevant
    documents, and random other documents up to n_docs."""
    return write_beir_slice(PACKAGED_BEIR / "scifact", dest, n_queries, n_docs, seed=seed)


@pytest.fixture(scope="session")
def scifact_slice(tmp_path_factory) -> Path:
    return make_beir_slice(tmp_path_factory.mktemp("beir") / "scifact-slice")


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path
