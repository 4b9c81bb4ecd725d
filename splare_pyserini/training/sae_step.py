"""sae-lens's TopK SAE training step without the (states x d_sae) dense matrices it does not need.

sae-lens's ``TopKTrainingSAE`` scatters each state's k winners into a dense (batch x d_sae) matrix and
decodes it with a dense matmul, in the forward pass, in the backward pass and again for the auxiliary
loss of dead latents; on a GPU that is cheap, on a CPU it is most of a step, so an SAE trained to
convergence (thousands of steps) needed a GPU. This subclass computes the same step: the same
pre-activations and winners (picked without gradient), then the decode and every gradient a TopK
step has (it reaches only the k winners of each state) as sparse (CSR) products with exactly k
entries per state, and the auxiliary loss from the dead latents' columns only (dense products over
them when they are few, sparse ones otherwise). Losses and gradients equal sae-lens's to float rounding
(tested); everything else (optimizer, schedule, dead latent tracking, saving) is sae-lens's own trainer.
"""
from __future__ import annotations

import warnings

import torch
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopKTrainingSAE

from ..model.topk import row_topk

__all__ = ["SparseStepTopKTrainingSAE", "sparse_step_supported"]
# the CSR products used here (mm, sampled_addmm) are stable; PyTorch warns on every CSR tensor built
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
DENSE_AUX_FACTOR = 8  # up to this many dead latents per auxiliary winner, the dense aux path was faster here


def sparse_step_supported(sae: TopKTrainingSAE) -> bool:
    """The settings the sparse step reproduces (the ones ``train_sae`` uses); others take sae-lens's path."""
    cfg = sae.cfg
    return (cfg.normalize_activations in ("none", "expected_average_only_in") and cfg.reshape_activations == "none"
            and not cfg.use_sparse_activations and not sae.use_error_term)


class SparseStepTopKTrainingSAE(TopKTrainingSAE):
    """A ``TopKTrainingSAE`` whose ``training_forward_pass`` never builds dense latents; saved, loaded and
    folded exactly as sae-lens's (it is the same module and config)."""

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        if not sparse_step_supported(self):
            return super().training_forward_pass(step_input)
        x = step_input.sae_in.to(self.dtype)
        sae_in = x - self.b_dec * self.cfg.apply_b_dec_to_input
        with torch.no_grad():
            # sae-lens's rescale_acts_by_decoder_norm: TopK on the pre-activations times the decoder norms,
            # whose activations are divided by the norms again when decoded
            hidden_pre = sae_in @ self.W_enc + self.b_enc  # sae-lens's own expression: the same rounding, winners
            inverse_norm = None
            if self.cfg.rescale_acts_by_decoder_norm:
                hidden_pre *= self.W_dec.norm(dim=-1)
                inverse_norm = 1 / self.W_dec.norm(dim=-1)
            winners = row_topk(hidden_pre, self.cfg.k)[1]  # (n, k)
            values = hidden_pre.gather(1, winners)
        acts = values.relu()  # sae-lens's feature_acts at the winners
        sae_out = SparseDecode.apply(sae_in, self.W_enc, self.b_enc, self.W_dec, winners,
                                     _decoded(acts, winners, inverse_norm), True) + self.b_dec
        mse_loss = (sae_out - x).pow(2).sum(dim=-1).mean()
        aux_loss = self.sparse_aux_loss(x, sae_in, sae_out, hidden_pre, inverse_norm, step_input.dead_neuron_mask)
        feature_acts = LatentFirings(acts.detach(), winners, self.cfg.d_sae)
        return TrainStepOutput(sae_in=step_input.sae_in, sae_out=sae_out, feature_acts=feature_acts,
                               hidden_pre=hidden_pre, loss=mse_loss + aux_loss,
                               losses={"mse_loss": mse_loss, "auxiliary_reconstruction_loss": aux_loss})

    def sparse_aux_loss(self, x: torch.Tensor, sae_in: torch.Tensor, sae_out: torch.Tensor, hidden_pre: torch.Tensor,
                        inverse_norm: torch.Tensor | None, dead: torch.Tensor | None) -> torch.Tensor:
        """sae-lens's TopK auxiliary loss: the top d_in/2 dead latents of each state (their pre-activations,
        no ReLU) reconstruct the residual of the live ones."""
        if dead is None or (num_dead := int(dead.sum())) == 0:
            return sae_out.new_tensor(0.0)
        k_aux = sae_in.shape[-1] // 2
        scale = min(num_dead / k_aux, 1.0)
        k_aux = min(k_aux, num_dead)
        columns = dead.nonzero().squeeze(1)
        with torch.no_grad():
            chosen = hidden_pre[:, columns].topk(k_aux, dim=-1, sorted=False).indices  # (n, k_aux) of columns
        if num_dead <= DENSE_AUX_FACTOR * k_aux:
            # few dead latents: dense products over their columns cost less than k_aux-wide sparse ones
            keep = torch.zeros(hidden_pre.shape[0], num_dead, dtype=sae_in.dtype, device=sae_in.device)
            keep.scatter_(1, chosen, 1.0)
            recons = (torch.addmm(self.b_enc[columns], sae_in, self.W_enc[:, columns]) * keep) @ self.W_dec[columns]
        else:
            picked = columns[chosen]
            recons = SparseDecode.apply(sae_in, self.W_enc, self.b_enc, self.W_dec, picked,
                                        _decoded(hidden_pre.gather(1, picked), picked, inverse_norm), False)
        residual = (x - sae_out).detach()
        return self.cfg.aux_loss_coefficient * scale * (recons - residual).pow(2).sum(dim=-1).mean()


class LatentFirings:
    """What sae-lens's trainer reads of a step's ``feature_acts``: which latents fired how often
    (``feature_acts.bool().float().sum(0)``, and ``.sum(-2)``), counted from the winners instead of a dense
    (states x d_sae) matrix. Anything else asked of it is answered by that dense matrix, built on demand."""

    is_sparse = False

    def __init__(self, acts: torch.Tensor, winners: torch.Tensor, d_sae: int):
        self.acts, self.winners, self.d_sae = acts, winners, d_sae
        self.shape = torch.Size((acts.shape[0], d_sae))

    def bool(self) -> "LatentFirings":
        return LatentFirings((self.acts > 0).to(self.acts.dtype), self.winners, self.d_sae)

    def float(self) -> "LatentFirings":
        return LatentFirings(self.acts.float(), self.winners, self.d_sae)

    def sum(self, dim: int, *args, **kwargs) -> torch.Tensor:
        if dim in (0, -2) and not args and not kwargs:
            return torch.zeros(self.d_sae, dtype=self.acts.dtype, device=self.acts.device).index_add_(
                0, self.winners.flatten(), self.acts.flatten())
        return self.to_dense().sum(dim, *args, **kwargs)

    def to_dense(self) -> torch.Tensor:
        return self.acts.new_zeros(self.shape).scatter_(1, self.winners, self.acts)

    def __getattr__(self, name: str):
        return getattr(self.to_dense(), name)


def _dense_operator(name: str):
    return lambda self, *args: getattr(self.to_dense(), name)(*args)


for _name in ("__gt__", "__ge__", "__lt__", "__le__", "__eq__", "__ne__", "__abs__", "__getitem__", "__mul__",
              "__add__", "__sub__", "__truediv__", "__pow__"):
    setattr(LatentFirings, _name, _dense_operator(_name))


def _decoded(acts: torch.Tensor, index: torch.Tensor, inverse_norm: torch.Tensor | None) -> torch.Tensor:
    """The activations as sae-lens's decode weighs the decoder rows: divided by the rows' norms when rescaled."""
    return acts if inverse_norm is None else acts * inverse_norm[index]


def _csr(crow: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return torch.sparse_csr_tensor(crow, columns, values, shape, check_invariants=False)


class SparseDecode(torch.autograd.Function):
    """``sum_j w_j W_dec[j]`` over each state's selected latents j (``index``, (n, k)), where ``w`` are the
    weights sae-lens's decode multiplies the rows by; the gradient reaches the pre-activations of the
    selected latents only (through a ReLU where ``relu``), so ``W_enc``, ``b_enc``, the input and
    ``W_dec`` get theirs from sparse products with k entries per state."""

    @staticmethod
    def forward(ctx, sae_in, W_enc, b_enc, W_dec, index, weights, relu):
        n, k = index.shape
        crow = torch.arange(0, n * k + 1, k, device=index.device)
        ctx.save_for_backward(sae_in, W_enc, W_dec, index, weights)
        ctx.relu, ctx.crow = relu, crow
        return _csr(crow, index.flatten(), weights.flatten(), (n, W_dec.shape[0])) @ W_dec

    @staticmethod
    def backward(ctx, grad_out):
        sae_in, W_enc, W_dec, index, weights = ctx.saved_tensors
        n, k = index.shape
        d_sae = W_dec.shape[0]
        columns = index.flatten()
        pattern = _csr(ctx.crow, columns, torch.ones_like(weights.flatten()), (n, d_sae))
        # d loss / d weight of each selected latent: grad_out . W_dec[j], only where selected
        grad_weights = torch.sparse.sampled_addmm(pattern, grad_out, W_dec.T, beta=0.0).values().view(n, k)
        # weights = pre-activation (times 1/norm * norm, which cancels: sae-lens's rescaling), after ReLU
        grad_pre = grad_weights * (weights > 0) if ctx.relu else grad_weights
        # the transposed pattern (latents x states), for the weight gradients
        order = torch.argsort(columns.int(), stable=True)  # int32: twice as fast here
        rows = torch.arange(n, device=index.device).repeat_interleave(k)[order]
        crow_t = torch.zeros(d_sae + 1, dtype=torch.long, device=index.device)
        crow_t[1:] = torch.bincount(columns, minlength=d_sae).cumsum(0)
        grad_sae_in = grad_W_enc = grad_b_enc = grad_W_dec = None
        if ctx.needs_input_grad[3]:
            grad_W_dec = _csr(crow_t, rows, weights.flatten()[order], (d_sae, n)) @ grad_out
        if ctx.needs_input_grad[1]:
            grad_W_enc = (_csr(crow_t, rows, grad_pre.flatten()[order], (d_sae, n)) @ sae_in).T
        if ctx.needs_input_grad[2]:
            grad_b_enc = torch.zeros(d_sae, dtype=grad_pre.dtype, device=grad_pre.device).index_add_(
                0, columns, grad_pre.flatten())
        if ctx.needs_input_grad[0]:
            grad_sae_in = _csr(ctx.crow, columns, grad_pre.flatten(), (n, d_sae)) @ W_enc.T
        return grad_sae_in, grad_W_enc, grad_b_enc, grad_W_dec, None, None, None
