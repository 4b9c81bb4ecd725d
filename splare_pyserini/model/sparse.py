"""The differentiable model: token ids -> pooled non-negative latent weights (texts x d_sae).

hidden states at one layer -> projection latents z per real token ->
w = max_t log(1 + relu(z_t)) (SPLADE pooling; ``sum`` sums log(1 + relu(z_t))); with saturation
``none`` the log is left out (w = max_t relu(z_t)), as some SAEs' own recipes pool.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..config import require
from .projection import TopKPlan, topk_plan, unexplained_variance
from .topk import row_topk
from .settings import POOLINGS, SATURATIONS

TOKEN_CHUNK = 8192  # tokens per projection call on the dense path: bounds the (tokens x d_sae) matrix
TOPK_CHUNK = 1024  # tokens per matmul on the sparse TopK path


class SparseLatentModel(nn.Module):
    def __init__(self, backbone: nn.Module, projection: nn.Module, pooling: str = "max",
                 sae_dtype: torch.dtype = torch.float32, saturation: str = "log1p", token_k: int | None = None):
        super().__init__()
        plan = topk_plan(projection)
        require(token_k is None or (plan is not None and 1 <= token_k <= plan.k),
                f"token_k: {token_k} needs a TopK projection with k >= {token_k}"
                + (f" (this one keeps {plan.k} per token)" if plan is not None else " (this one is not TopK)"))
        self.token_k = token_k  # latents kept per token: the TopK projection's own k unless fewer are asked
        require(pooling in POOLINGS, f"pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")
        require(saturation in SATURATIONS, f"saturation: {saturation!r} is not one of {', '.join(SATURATIONS)}")
        self.saturation = saturation
        self.sae_dtype = sae_dtype  # matmul precision of the inference TopK path only
        self.backbone = backbone
        self.projection = projection
        self.pooling = pooling
        self.recon_tokens = 0  # > 0 while training with the SAE-fit term: token states it samples per forward
        self.last_fvu: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return int(self.projection.cfg.d_sae)

    def token_latents(self, hidden: torch.Tensor) -> torch.Tensor:
        """Latents z for a (N, d_in) matrix of token states, in chunks."""
        dtype = self.projection.W_enc.dtype
        parts = [self.projection.encode(chunk.to(dtype)) for chunk in hidden.split(TOKEN_CHUNK)]
        return torch.cat(parts) if parts else hidden.new_zeros((0, self.dim))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids, attention_mask)
        mask = token_mask.bool()
        states = hidden[mask]  # only real tokens reach the projection
        if self.recon_tokens and torch.is_grad_enabled():
            self.last_fvu = self.sae_fvu(states[::max(1, -(-states.shape[0] // self.recon_tokens))])
        return self.pool(states, mask.sum(dim=1).tolist())

    def sae_fvu(self, states: torch.Tensor) -> torch.Tensor:
        """The share of the states' variance the SAE does not reconstruct (1 - explained variance).
        Fine-tuning moves the states off the distribution the frozen SAE was trained on, and its latents
        lose what made them general; as a loss term this keeps the states where the SAE still fits."""
        x = states.to(self.projection.W_enc.dtype)
        return unexplained_variance(x, self.projection.decode(self.projection.encode(x)))

    def pool(self, tokens: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Pooled weights (texts x d_sae) of the real tokens' states, ``lengths[i]`` tokens per text: the
        TopK path where the projection has one, sae-lens's own ``encode`` otherwise."""
        plan = topk_plan(self.projection)
        if plan is not None:
            return self.pool_topk(replace(plan, k=self.token_k) if self.token_k else plan, tokens, lengths)
        return self.pool_dense(tokens, lengths)

    def pool_dense(self, tokens: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Pooled weights from sae-lens's own ``encode``: any SAE architecture."""
        latents = self.token_latents(tokens)
        pooled = []
        for segment in latents.split(lengths):
            if segment.shape[0] == 0:
                pooled.append(latents.new_zeros(self.dim))
            elif self.pooling == "max":
                # log1p and relu are monotone: max_t log(1 + relu(z_t)) = log(1 + relu(max_t z_t)),
                # so the transform runs on d_sae values per text instead of tokens x d_sae.
                pooled.append(self.saturate(torch.relu(segment.amax(dim=0))))
            else:
                pooled.append(self.saturate(torch.relu(segment)).sum(dim=0))
        return torch.stack(pooled)

    def saturate(self, z: torch.Tensor) -> torch.Tensor:
        """The weight of non-negative activations: log(1 + z), or z itself with saturation ``none``."""
        return torch.log1p(z) if self.saturation == "log1p" else z

    def pool_topk(self, plan: TopKPlan, tokens: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Pooled weights of a TopK projection without the (tokens x d_sae) latent matrix: each token's
        k winners are scattered straight into the (texts x d_sae) pool (amax, or sum of log1p). Equal to
        the dense path in values and gradients (tested). Under autograd the winners are picked without
        gradient and their values recomputed from the k gathered columns, which is all TopK's gradient
        reaches, so training never builds the dense latents either (30,522 columns for the twin)."""
        d = self.dim
        train = torch.is_grad_enabled()
        segment = torch.repeat_interleave(torch.arange(len(lengths), device=tokens.device),
                                          torch.tensor(lengths, device=tokens.device))
        pooled = tokens.new_zeros(len(lengths) * d, dtype=torch.float32)
        dtype = torch.float32 if train else self.sae_dtype
        weight, bias = plan.weight.to(dtype), plan.bias.to(dtype)
        for start in range(0, tokens.shape[0], TOPK_CHUNK):
            x = plan.prepare(tokens[start:start + TOPK_CHUNK].to(plan.weight.dtype)).to(dtype)
            with torch.no_grad():
                values, index = row_topk(torch.addmm(bias, x, weight), plan.k)
            if train:  # the same k values, now differentiable in x (and in the projection)
                columns = weight.T[index]  # (tokens, k, d_in)
                values = torch.einsum("nd,nkd->nk", x, columns) + bias[index]
            values = torch.relu(values.float())
            flat = (segment[start:start + TOPK_CHUNK, None] * d + index).flatten()
            if self.pooling == "max":
                pooled = pooled.scatter_reduce(0, flat, values.flatten(), "amax")
            else:
                pooled = pooled.scatter_add(0, flat, self.saturate(values).flatten())
        pooled = pooled.view(len(lengths), d)
        return self.saturate(pooled) if self.pooling == "max" else pooled
