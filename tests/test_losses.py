"""The SPLADE objective: ranking loss, FLOPS with warm-up, distillation, and the learning-rate schedule."""
import math

import pytest
import torch

from splare_pyserini.training.losses import (SpladeLoss, contrastive_loss, flops, positive_and_negative,
                                             quadratic_warmup)
from splare_pyserini.training.trainer import warmup_then_linear_decay


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """2 queries and 4 documents (2 positives, then a hard negative per query), non-negative like pooled weights."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 6, generator=gen), torch.rand(4, 6, generator=gen)


def test_ranking_flops_and_warmup():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[5.0, 0.0], [0.0, 5.0], [1.0, 1.0], [0.0, 0.0]])
    assert float(contrastive_loss(q, d)) < float(contrastive_loss(q, d.flip(0)))
    torch.testing.assert_close(contrastive_loss(q, d, temperature=5.0), contrastive_loss(q / 5.0, d))
    assert float(flops(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))) == pytest.approx(2.0 ** 2 + 1.0 ** 2)
    assert [quadratic_warmup(s, 10, 1.0) for s in (0, 5, 10, 20)] == [0.0, 0.25, 1.0, 1.0]


def test_splade_loss_is_ranking_plus_weighted_flops():
    q, d = batch()
    loss = SpladeLoss(temperature=2.0, lambda_q=0.3, lambda_d=0.7, flops_warmup=10)
    total, parts = loss(q, d, step=5)
    assert set(parts) == {"rank", "flops_q", "flops_d"}
    torch.testing.assert_close(parts["rank"], contrastive_loss(q, d, 2.0))
    torch.testing.assert_close(parts["flops_q"], 0.25 * 0.3 * flops(q))
    torch.testing.assert_close(parts["flops_d"], 0.25 * 0.7 * flops(d))
    torch.testing.assert_close(total, parts["rank"] + parts["flops_q"] + parts["flops_d"])
    assert float(loss(q, d, step=0)[1]["flops_d"]) == 0.0  # no regularization before the warm-up starts


def test_positive_and_negative_columns():
    scores = torch.arange(8.0).view(2, 4)  # query i: positive column i, hard negative column 2 + i
    assert positive_and_negative(scores).tolist() == [[0.0, 2.0], [5.0, 7.0]]


@pytest.mark.parametrize("distill", ["kl", "margin-mse"])
def test_distillation_uses_the_teacher_scores(distill):
    q, d = batch()
    teacher = torch.tensor([[0.9, 0.1, 0.3, 0.2], [0.2, 0.8, 0.1, 0.4]])
    loss = SpladeLoss(distill=distill, distill_weight=0.5, teacher_temperature=0.05)
    total, parts = loss(q, d, step=0, teacher_scores=teacher)
    assert math.isfinite(float(parts["distill"])) and float(parts["distill"]) > 0
    torch.testing.assert_close(total, parts["rank"] + parts["flops_q"] + parts["flops_d"] + 0.5 * parts["distill"])
    reversed_teacher = teacher.flip(1)  # a teacher that prefers the negatives
    assert float(loss(q, d, 0, reversed_teacher)[1]["distill"]) != pytest.approx(float(parts["distill"]))
    hotter = SpladeLoss(distill=distill, teacher_temperature=1.0)  # the teacher temperature matters too
    assert float(hotter(q, d, 0, teacher)[1]["distill"]) != pytest.approx(float(parts["distill"]))


def test_distillation_needs_a_known_loss_and_teacher_scores():
    with pytest.raises(ValueError, match="distill: 'mse'"):
        SpladeLoss(distill="mse")
    with pytest.raises(ValueError, match="teacher"):
        SpladeLoss(distill="kl")(*batch(), step=0)


def test_learning_rate_warms_up_then_decays_linearly_to_zero():
    factors = [warmup_then_linear_decay(s, warmup_steps=4, total_steps=12) for s in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4:] == [(12 - s) / 8 for s in range(4, 12)] and factors[-1] > 0
    assert warmup_then_linear_decay(12, 4, 12) == 0.0
    assert warmup_then_linear_decay(0, 0, 5) == 1.0  # no warm-up
