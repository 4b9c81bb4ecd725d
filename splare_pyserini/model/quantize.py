"""Float latent weights -> integer impacts, and how the scale between them is chosen."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

DEFAULT_QUANT_SCALE = 100.0  # SPLADE's choice, used when neither checkpoint nor SAE records a scale
CALIBRATION_TEXTS = 200  # documents whose token weights set a trained checkpoint's scale
CALIBRATION_TOKENS = 20_000
CALIBRATION_CHUNK = 2 ** 27  # latent weights computed at once while calibrating


def keep_topk(weights: torch.Tensor, k: int | None) -> torch.Tensor:
    """Each row's ``k`` largest weights, the others zeroed (``None`` or 0: all kept). Differentiable:
    training applies the same cut as encoding, so gradients reach only the latents that are kept."""
    if not k or k >= weights.shape[1]:
        return weights
    values, idx = torch.topk(weights, k, dim=1)
    return torch.zeros_like(weights).scatter(1, idx, values)


@lru_cache(maxsize=8)
def term_names(prefix: str, dim: int) -> tuple[str, ...]:
    """Every pseudo-term of a ``dim``-wide space, made once: formatting a name per kept latent was the
    largest cost of quantization."""
    return tuple(f"{prefix}{i}" for i in range(dim))


def quantize(weights: torch.Tensor, scale: float, topk: int | None = None, prefix: str = "L") -> list[dict[str, int]]:
    """Rows of float weights -> {prefix+latent id: round(w * scale)}, zeros dropped, keys in id order.

    One ``nonzero`` and one copy to Python for the whole batch, not one per row: on a GPU each per-row
    copy is a device synchronization."""
    weights = keep_topk(weights, topk)
    impacts = torch.round(weights * scale).to(torch.int64)
    rows, cols = torch.nonzero(impacts > 0, as_tuple=True)  # row-major: rows grouped, ids ascending
    values = impacts[rows, cols].tolist()
    counts = torch.bincount(rows, minlength=impacts.shape[0]).tolist()
    names, ids = term_names(prefix, impacts.shape[1]), cols.tolist()
    vectors, start = [], 0
    for count in counts:
        stop = start + count
        vectors.append(dict(zip([names[i] for i in ids[start:stop]], values[start:stop])))
        start = stop
    return vectors


def pretokenize(vector: dict[str, int]) -> str:
    """A vector as whitespace tokens, each latent repeated by its impact (Anserini's pretokenized form)."""
    return " ".join(" ".join([token] * weight) for token, weight in vector.items())


@torch.inference_mode()
def calibrate_quant_scale(projection, acts: torch.Tensor, target: float = 100.0, saturation: str = "log1p") -> float:
    """Scale that maps the 99th percentile of non-zero token weights log(1 + z) (z itself with
    saturation ``none``) to ``target``.

    SAE latents have no fixed range (it follows the backbone's activation norms), so a fixed
    scale like SPLADE's 100 can round most weights to 1 or 2. Stored with the SAE
    (``splare_quant_scale``) or the checkpoint (``quant_scale``); the encoder uses it by default.
    """
    # in slices of about 2**27 weights: a 250k-term vocabulary over 20k tokens would be 20 GB at once
    step = max(1, CALIBRATION_CHUNK // int(projection.cfg.d_sae))
    kept = []
    for start in range(0, acts.shape[0], step):
        part = acts[start:start + step].to(projection.W_enc.device, projection.W_enc.dtype)
        weights = torch.relu(projection.encode(part)).float()
        weights = torch.log1p(weights) if saturation == "log1p" else weights
        kept.append(weights[weights > 0].cpu())
    nonzero = torch.cat(kept) if kept else torch.zeros(0)
    p99 = float(torch.quantile(nonzero[:1_000_000], 0.99)) if nonzero.numel() else 1.0
    return round(target / p99, 3)


def calibrate_saved_sae(folder: str | Path, source: str | Sequence[str], model: str | None = None,
                        max_texts: int = CALIBRATION_TEXTS, max_length: int = 256,
                        saturation: str | None = None) -> float:
    """Record ``splare_quant_scale`` in a saved SAE's cfg.json metadata; returns the scale. Only the
    encoder runs, so an encoder-only SAE calibrates too, under the saturation it records, or under
    ``saturation``, which is then recorded with it. (Here, not in training/, because converting a
    public SAE calibrates it too.)"""
    from ..datasets import training_texts
    from ..errors import ArtifactError
    from ..io import atomic_write
    from .artifacts import BASE_MODEL
    from .backbone import TextBatcher, collect_activations, load_backbone
    from .projection import load_sae, recorded_layer

    folder, model = Path(folder), model or BASE_MODEL
    sae = load_sae(str(folder))
    layer = recorded_layer(sae)
    if layer is None:
        raise ArtifactError(f"{folder}: the SAE records no layer (metadata hook_name)")
    tokenizer, backbone = load_backbone(model, layer, attention=sae.cfg.metadata.get("splare_attention"))
    sources = [source] if isinstance(source, str) else list(source)
    texts = [t for s in sources for t in training_texts(s)[:max(1, max_texts // len(sources))]]
    acts = collect_activations(TextBatcher.for_backbone(tokenizer, backbone), backbone, texts, max_length,
                               max_tokens=CALIBRATION_TOKENS)
    saturation = saturation or (sae.cfg.metadata or {}).get("splare_saturation", "log1p")
    scale = calibrate_quant_scale(sae, acts, saturation=saturation)
    cfg = json.loads((folder / "cfg.json").read_text(encoding="utf-8"))
    cfg.setdefault("metadata", {}).update(splare_quant_scale=scale, splare_saturation=saturation)
    with atomic_write(folder / "cfg.json") as out:
        json.dump(cfg, out)
    return scale
