"""The backbone's own vocabulary as the latent space: the vocabulary-SPLADE twin.

Hidden states are projected on the (tied) input embeddings, ``z = h E^T``, as SPLADE's
MLM decoder does, and, like the TopK SAE it is compared with, each token keeps only its
``k`` largest logits. Without that, raw logits of a model with no MLM head (MiniLM ships
none) are positive for nearly every term: measured on SciFact, max pooling then gave all
30,522 terms non-zero in every document. The same pooling, quantization, indexing and
training recipe then run on vocabulary terms instead of SAE latents (``--sae vocab``).
It exposes the slice of sae-lens's SAE interface the encoder uses (``encode``, ``cfg``, ``W_enc``).
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

VOCAB = "vocab"
DEFAULT_VOCAB_K = 32  # the shipped TopK SAE's k, so both keep as many terms per token


class VocabProjection(nn.Module):
    def __init__(self, embeddings: nn.Embedding, k: int = DEFAULT_VOCAB_K, metadata: dict | None = None):
        super().__init__()
        self.embeddings = embeddings  # shared with the backbone, as SPLADE ties its MLM decoder
        vocab_size, hidden = embeddings.weight.shape
        self.k = k
        self.cfg = SimpleNamespace(d_in=hidden, d_sae=vocab_size, k=k, metadata=dict(metadata or {}))

    @property
    def W_enc(self) -> torch.Tensor:
        return self.embeddings.weight.T

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.embeddings.weight.T
        values, index = torch.topk(logits, min(self.k, logits.shape[-1]), dim=-1)
        return torch.zeros_like(logits).scatter(-1, index, torch.relu(values))
