"""Builders shared by the tests: a tiny random backbone and SAE made in-process, real SciFact slices."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from splare_pyserini.datasets import PACKAGED_BEIR, write_beir_slice
from splare_pyserini.model.artifacts import BASE_MODEL, resolve_path

TINY_HIDDEN = 32
TINY_LAYERS = 3
TINY_LAYER = 2
TINY_D_SAE = 64


def build_tiny_bert(path: Path, hidden: int = TINY_HIDDEN) -> Path:
    """A random 3-layer BERT with the real MiniLM tokenizer (offline)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(BASE_MODEL))
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


def make_beir_slice(dest: Path, n_queries: int = 40, n_docs: int = 300, seed: int = 0) -> Path:
    """A BEIR folder: the first n test queries of the shipped SciFact, their relevant
    documents, and random other documents up to n_docs."""
    return write_beir_slice(PACKAGED_BEIR / "scifact", dest, n_queries, n_docs, seed=seed)


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path
