"""Activation batches for SAE training (the states themselves come from
:func:`..model.backbone.collect_activations`, re-exported here)."""
from __future__ import annotations

from typing import Iterator

import torch

from ..model.backbone import collect_activations  # noqa: F401  (re-exported: its home is the backbone)


class ShuffledBatches(Iterator[torch.Tensor]):
    """Endless seeded shuffles of an in-memory activation matrix, one batch at a time."""

    def __init__(self, activations: torch.Tensor, batch_size: int, seed: int = 0):
        self.acts = activations
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._perm = torch.randperm(len(activations), generator=self.generator)
        self._pos = 0

    def __next__(self) -> torch.Tensor:
        return self.acts[self._next_indices()]

    def skip(self, batches: int) -> None:
        """Move past ``batches`` batches exactly as drawing them would (a resumed training's batch order)."""
        for _ in range(batches):
            self._next_indices()

    def _next_indices(self) -> torch.Tensor:
        if self._pos + self.batch_size > len(self._perm):
            self._perm = torch.randperm(len(self.acts), generator=self.generator)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx
