"""Collect a backbone's hidden states at one layer for SAE training.

Uses the same tokenization and token mask as the encoder (no padding, no special
tokens), so the SAE is trained on exactly the states it will later encode.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from tqdm import tqdm


@torch.inference_mode()
def collect_activations(encoder_like, texts: Sequence[str], batch_size: int = 32,
                        max_tokens: int | None = None) -> torch.Tensor:
    """(N, d_in) float32 hidden states of every real token, in length-sorted batches."""
    lengths = encoder_like.token_lengths(texts)
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    parts, total = [], 0
    with tqdm(total=len(texts), desc="activations", unit="text") as bar:
        for start in range(0, len(order), batch_size):
            batch = encoder_like.tokenize([texts[i] for i in order[start:start + batch_size]])
            hidden = encoder_like.model.backbone(batch["input_ids"], batch["attention_mask"])
            states = hidden[batch["token_mask"]].float().cpu()
            parts.append(states)
            total += states.shape[0]
            bar.update(len(order[start:start + batch_size]))
            bar.set_postfix(tokens=total)
            if max_tokens is not None and total >= max_tokens:
                break
    acts = torch.cat(parts)
    return acts[:max_tokens] if max_tokens is not None else acts


class ShuffledBatches(Iterator[torch.Tensor]):
    """Endless seeded shuffles of an in-memory activation matrix, one batch at a time."""

    def __init__(self, activations: torch.Tensor, batch_size: int, seed: int = 0):
        self.acts = activations
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._perm = torch.randperm(len(activations), generator=self.generator)
        self._pos = 0

    def __next__(self) -> torch.Tensor:
        if self._pos + self.batch_size > len(self._perm):
            self._perm = torch.randperm(len(self.acts), generator=self.generator)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.acts[idx]
