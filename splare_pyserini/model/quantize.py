"""Float latent weights -> integer impacts, and how the scale between them is chosen."""
from __future__ import annotations

import torch

DEFAULT_QUANT_SCALE = 100.0  # SPLADE's choice, used when neither checkpoint nor SAE records a scale
CALIBRATION_TEXTS = 200  # documents whose token weights set a trained checkpoint's scale
CALIBRATION_TOKENS = 20_000


def keep_topk(weights: torch.Tensor, k: int | None) -> torch.Tensor:
    """Each row's ``k`` largest weights, the others zeroed (``None`` or 0: all kept). Differentiable:
    training applies the same cut as encoding, so gradients reach only the latents that are kept."""
    if not k or k >= weights.shape[1]:
        return weights
    values, idx = torch.topk(weights, k, dim=1)
    return torch.zeros_like(weights).scatter(1, idx, values)


def quantize(weights: torch.Tensor, scale: float, topk: int | None = None, prefix: str = "L") -> list[dict[str, int]]:
    """Rows of float weights -> {prefix+latent id: round(w * scale)}, zeros dropped, keys in id order."""
    weights = keep_topk(weights, topk)
    impacts = torch.round(weights * scale).to(torch.int64)
    vectors = []
    for row in impacts:
        ids = torch.nonzero(row > 0).flatten().tolist()
        vals = row[ids].tolist()
        vectors.append({f"{prefix}{i}": int(v) for i, v in zip(ids, vals)})
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
    weights = torch.relu(projection.encode(acts.to(projection.W_enc.dtype))).float()
    weights = torch.log1p(weights) if saturation == "log1p" else weights
    nonzero = weights[weights > 0]
    p99 = float(torch.quantile(nonzero[:1_000_000], 0.99)) if nonzero.numel() else 1.0
    return round(target / p99, 3)
