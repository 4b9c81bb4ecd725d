"""The backbone's own vocabulary as the latent space: the vocabulary-SPLADE twin.

Hidden states are projected on the (tied) input embeddings, ``z = h E^T``, as SPLADE's
MLM decoder does, so the same pooling, quantization, indexing and training recipe
run on vocabulary terms instead of SAE latents (``--sae vocab``). It exposes the
slice of sae-lens's SAE interface the encoder uses (``encode``, ``cfg``, ``W_enc``).
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

VOCAB = "vocab"


class VocabProjection(nn.Module):
    def __init__(self, embeddings: nn.Embedding, metadata: dict | None = None):
        super().__init__()
        self.embeddings = embeddings  # shared with the backbone, as SPLADE ties its MLM decoder
        vocab_size, hidden = embeddings.weight.shape
        self.cfg = SimpleNamespace(d_in=hidden, d_sae=vocab_size, metadata=dict(metadata or {}))

    @property
    def W_enc(self) -> torch.Tensor:
        return self.embeddings.weight.T

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.embeddings.weight.T
