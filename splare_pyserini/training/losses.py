"""Losses of the SPLADE recipe, applied to SAE latents (or vocabulary terms)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(queries: torch.Tensor, documents: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE: query i's positive is document i; every other document in the batch (the other
    positives and all hard negatives, stacked after the B positives) is a negative. Scores are
    divided by ``temperature``: projections whose dot products spread wider (the vocabulary
    twin's, ~5x the SAE's at initialization) otherwise saturate the softmax."""
    scores = queries @ documents.T / temperature
    return F.cross_entropy(scores, torch.arange(queries.shape[0], device=queries.device))


def flops(weights: torch.Tensor) -> torch.Tensor:
    """FLOPS regularizer (Paria et al., 2020; SPLADE): sum_j (mean_i w_ij)^2."""
    return (weights.mean(dim=0) ** 2).sum()


def quadratic_warmup(step: int, warmup_steps: int, target: float) -> float:
    """Regularization weight rising as (step / warmup)^2 to ``target``, as SPLADE schedules it."""
    if warmup_steps <= 0:
        return target
    return target * min(1.0, (step / warmup_steps) ** 2)


def distillation_kl(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over each query's candidate list."""
    return F.kl_div(F.log_softmax(student_scores, dim=1), F.log_softmax(teacher_scores, dim=1),
                    reduction="batchmean", log_target=True)


def margin_mse(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """MarginMSE on (positive - hard negative) score margins; columns 0 and 1 of each row."""
    return F.mse_loss(student_scores[:, 0] - student_scores[:, 1], teacher_scores[:, 0] - teacher_scores[:, 1])
