"""Which token gave each latent its pooled weight: the per-token latents behind a vector. No JVM here.

Under max pooling a latent's weight is ``log(1 + relu(max_t z_tj))``, so one token (the argmax) sets it;
under sum pooling every token adds ``log(1 + relu(z_tj))`` and the argmax token is the largest addend.
The per-token latents are those the pooling saw: a TopK projection (SAE or vocabulary twin) through its
:class:`~splare_pyserini.model.projection.TopKPlan` in the encoder's SAE precision (the k winners of
each token, as ``SparseLatentModel.pool_topk`` scatters them), any other SAE through ``token_latents``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .projection import topk_plan
from .sparse import TOPK_CHUNK, SparseLatentModel


@torch.inference_mode()
def token_latent_entries(model: SparseLatentModel, tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero latents of each token state of a (N, d_in) matrix as COO arrays
    (token row, latent id, activation z > 0), rows in order, latents ascending within a row."""
    rows, cols, vals = [], [], []
    plan = topk_plan(model.projection)
    if plan is not None:
        dtype = model.sae_dtype
        weight, bias = plan.weight.to(dtype), plan.bias.to(dtype)
        for start in range(0, tokens.shape[0], TOPK_CHUNK):
            x = plan.prepare(tokens[start:start + TOPK_CHUNK].to(plan.weight.dtype)).to(dtype)
            values, index = torch.addmm(bias, x, weight).topk(plan.k, dim=1)
            values = torch.relu(values.float())
            row = torch.arange(start, start + x.shape[0]).unsqueeze(1).expand_as(index)
            keep = values > 0
            rows.append(row[keep]), cols.append(index[keep]), vals.append(values[keep])
    else:
        z = model.token_latents(tokens).float()
        row, col = torch.nonzero(z > 0, as_tuple=True)
        rows.append(row), cols.append(col), vals.append(z[row, col])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    r, c, v = (torch.cat(a).cpu().numpy() for a in (rows, cols, vals))
    order = np.lexsort((c, r))
    return r[order].astype(np.int64), c[order].astype(np.int64), v[order].astype(np.float32)


def first_of_groups(keys: np.ndarray, values: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Indices of the entry with the largest value per key (ties: the smallest ``tie``), keys ascending."""
    if keys.size == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((tie, -values, keys))
    sorted_keys = keys[order]
    first = np.ones(order.size, bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return order[first]


@dataclass
class TextActivations:
    """One text as the encoder saw it: its real tokens (special tokens and truncated tail excluded),
    their character spans in ``text``, and for each latent that fired its peak activation and the token
    that reached it."""
    text: str
    tokens: list[str]
    spans: list[tuple[int, int]]
    peaks: dict[int, tuple[float, int]]  # latent -> (largest activation z, token position)
    saturation: str = "log1p"  # the encoder's: how a pooled activation becomes a weight

    def argmax_token(self, latent: int) -> int | None:
        """Position of the token whose activation gave ``latent`` its pooled weight (None: it did not fire)."""
        peak = self.peaks.get(latent)
        return None if peak is None else peak[1]

    def token_text(self, position: int | None) -> str | None:
        """The token as it reads in the text (a word piece shows the characters it covers)."""
        if position is None:
            return None
        start, end = self.spans[position]
        return self.text[start:end] if end > start else self.tokens[position]

    def weight(self, latent: int) -> float:
        """The max-pooled weight log(1 + z) (z with saturation ``none``) of ``latent`` (0 if it did not fire)."""
        peak = self.peaks.get(latent)
        if not peak:
            return 0.0
        return float(np.log1p(peak[0])) if self.saturation == "log1p" else float(peak[0])


def _window_states(encoder, batch: dict[str, torch.Tensor], room: int) -> torch.Tensor:
    """The real tokens' states of each text, in order, each token seen within its window as
    ``encode_windows`` cuts it (the windows' content tokens, concatenated, are the text's)."""
    from .backbone import cut_windows

    items = []
    for i in range(batch["input_ids"].shape[0]):
        length = int(batch["attention_mask"][i].sum())
        items += cut_windows(batch["input_ids"][i, :length].tolist(), batch["special_tokens_mask"][i, :length].tolist(),
                             room)
    windows = encoder.batcher.collate(items)
    hidden = encoder.model.backbone(windows["input_ids"], windows["attention_mask"])
    return hidden[windows["token_mask"].to(hidden.device)]


@torch.inference_mode()
def text_activations(encoder, texts: Sequence[str], query: bool = False) -> list[TextActivations]:
    """Re-run ``encoder`` (a ``SaeSparseEncoder``) on ``texts`` as one batch and attribute every latent
    to its argmax token. Queries are whitespace-normalized first, as ``encode_queries`` does."""
    from .encoder import normalize_query

    max_length = encoder.settings.side(query)[0]
    windows = 1 if query else encoder.settings.windows
    texts = [normalize_query(t) if query else t for t in texts]
    if windows > 1:
        room, wrap = encoder.batcher.window_room(max_length)
        max_length = room * windows + wrap
    batch = encoder.batcher.tokenize(texts, max_length, offsets=True)  # as encoding does (a decoder's BOS sink too)
    mask = batch["attention_mask"].bool() & ~batch["special_tokens_mask"].bool()
    model = encoder.model
    if windows > 1:
        states = _window_states(encoder, batch, room)
    else:
        hidden = model.backbone(batch["input_ids"].to(encoder.device), batch["attention_mask"].to(encoder.device))
        states = hidden[mask.to(hidden.device)]
    rows, cols, vals = token_latent_entries(model, states)
    lengths = mask.sum(dim=1).tolist()
    starts = np.cumsum([0] + lengths)
    out = []
    for i, text in enumerate(texts):
        real = mask[i].nonzero().flatten().tolist()
        ids = batch["input_ids"][i, real].tolist()
        spans = [tuple(int(x) for x in batch["offset_mapping"][i, p].tolist()) for p in real]
        lo, hi = np.searchsorted(rows, [starts[i], starts[i + 1]])
        r, c, v = rows[lo:hi] - starts[i], cols[lo:hi], vals[lo:hi]
        best = first_of_groups(c, v, r)
        peaks = {int(c[j]): (float(v[j]), int(r[j])) for j in best}
        out.append(TextActivations(text, encoder.tokenizer.convert_ids_to_tokens(ids), spans, peaks,
                                   encoder.settings.saturation or "log1p"))
    return out
