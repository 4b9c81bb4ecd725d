"""A backbone's hidden states at one layer, for training and calibrating SAEs.

Tokenized by the encoder's own :class:`TextBatcher` (same truncation, same mask of real tokens:
no padding, no special tokens), so an SAE is trained on exactly the states it will later encode.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from tqdm import tqdm

from ..model.backbone import LayerBackbone, TextBatcher, length_sorted_batches


@torch.inference_mode()
def collect_activations(batcher: TextBatcher, backbone: LayerBackbone, texts: Sequence[str], max_length: int,
                        batch_size: int = 32, max_tokens: int | None = None) -> torch.Tensor:
    """(N, d_in) float32 hidden states of every real token, longest texts first, at most ``max_tokens``."""
    parts, total = [], 0
    with tqdm(total=len(texts), desc="activations", unit="text", dynamic_ncols=True) as bar:
        for idx in length_sorted_batches(batcher.lengths(texts, max_length), batch_size):
            batch = batcher([texts[i] for i in idx], max_length)
            hidden = backbone(batch["input_ids"], batch["attention_mask"])
            states = hidden[batch["token_mask"]].float().cpu()
            parts.append(states)
            total += states.shape[0]
            bar.update(len(idx))
            bar.set_postfix(tokens=total)
            if max_tokens is not None and total >= max_tokens:
                break
    acts = torch.cat(parts) if parts else torch.zeros(0, backbone.hidden_size)
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
