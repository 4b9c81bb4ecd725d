"""Losses of the SPLADE recipe, applied to SAE latents (or vocabulary terms).

:class:`SpladeLoss` is the whole objective as one object, as sentence-transformers' ``SpladeLoss``
is: a ranking loss, FLOPS on documents and queries with their own weights (quadratic warm-up),
and optional distillation from a teacher's scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DISTILLATIONS = ("kl", "margin-mse")


def contrastive_loss(queries: torch.Tensor, documents: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE: query i's positive is document i; every other document in the batch (the other
    positives and all hard negatives, stacked after the B positives) is a negative. Scores are
    divided by ``temperature``: projections whose dot products spread wider (e.g. the vocabulary
    twin's) would otherwise saturate the softmax."""
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


def positive_and_negative(scores: torch.Tensor) -> torch.Tensor:
    """(B, 2) scores of query i against its positive (column i) and its hard negative (column B + i)."""
    n = scores.shape[0]
    idx = torch.arange(n, device=scores.device)
    return torch.stack([scores[idx, idx], scores[idx, idx + n]], dim=1)


@dataclass(frozen=True)
class SpladeLoss:
    """InfoNCE + lambda_q * FLOPS(queries) + lambda_d * FLOPS(documents) [+ distill_weight * distillation].

    Called with the pooled weights of B queries and of their 2B documents (B positives, then one
    hard negative per query) and, when ``distill`` is set, the teacher's (B, 2B) query-document
    similarities, which are divided by ``teacher_temperature`` (a dense teacher's cosines lie in
    [-1, 1], far flatter than the student's dot products)."""
    temperature: float = 1.0
    lambda_q: float = 1e-3
    lambda_d: float = 1e-3
    flops_warmup: int = 0
    distill: str | None = None
    distill_weight: float = 1.0
    teacher_temperature: float = 0.05

    def __post_init__(self) -> None:
        if self.distill is not None and self.distill not in DISTILLATIONS:
            raise ValueError(f"distill: {self.distill!r} is not one of {', '.join(DISTILLATIONS)}")

    def __call__(self, queries: torch.Tensor, documents: torch.Tensor, step: int,
                 teacher_scores: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, its parts: ``rank``, ``flops_q``, ``flops_d`` and ``distill`` when distilling)."""
        parts = {"rank": contrastive_loss(queries, documents, self.temperature),
                 "flops_q": quadratic_warmup(step, self.flops_warmup, self.lambda_q) * flops(queries),
                 "flops_d": quadratic_warmup(step, self.flops_warmup, self.lambda_d) * flops(documents)}
        if self.distill is not None:
            if teacher_scores is None:
                raise ValueError("distillation needs the teacher's scores")
            parts["distill"] = self.distillation(queries @ documents.T / self.temperature,
                                                 teacher_scores / self.teacher_temperature)
        total = parts["rank"] + parts["flops_q"] + parts["flops_d"]
        if "distill" in parts:
            total = total + self.distill_weight * parts["distill"]
        return total, parts

    def distillation(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if self.distill == "kl":
            return distillation_kl(student, teacher)
        return margin_mse(positive_and_negative(student), positive_and_negative(teacher))
