"""Which parameters train: the transformer blocks up to the layer (fully, or through LoRA
adapters), and the SAE only when asked. Embeddings and everything after the layer stay frozen."""
from __future__ import annotations

import torch

from ..model.checkpoint import inject_lora, merge_adapters
from ..model.sparse import SparseLatentModel


def freeze_all_but_blocks(model: SparseLatentModel, train_projection: bool) -> list[str]:
    """Unfreeze the blocks (and the projection if asked); return the backbone parameter names a
    checkpoint stores."""
    for param in model.parameters():
        param.requires_grad_(False)
    prefix = model.backbone.layers_name + "."
    names = []
    for name, param in model.backbone.model.named_parameters():
        if name.startswith(prefix):
            param.requires_grad_(True)
            names.append(name)
    if train_projection:
        for param in model.projection.parameters():
            param.requires_grad_(True)
    return names


def linear_targets(model: torch.nn.Module, layers_name: str) -> list[str]:
    """Names of the linear layers inside the blocks (``layers_name``, e.g. ``layers``): where LoRA goes."""
    prefix = layers_name + "."
    return [name for name, module in model.named_modules()
            if name.startswith(prefix) and isinstance(module, torch.nn.Linear)]


def add_lora(model: SparseLatentModel, rank: int, alpha: float) -> dict:
    """Replace full fine-tuning of the blocks by LoRA adapters (peft) on their linear layers;
    only the adapters (and the SAE, if it trains) keep ``requires_grad``. Returns the adapter's
    description, as a checkpoint records it."""
    backbone = model.backbone.model
    targets = linear_targets(backbone, model.backbone.layers_name)
    for param in backbone.parameters():
        param.requires_grad_(False)
    lora = {"rank": rank, "alpha": alpha, "target_modules": targets}
    inject_lora(backbone, lora)
    return lora


def lora_names(model: SparseLatentModel) -> list[str]:
    """The backbone parameter names of the LoRA matrices: what an adapter checkpoint stores."""
    return [name for name, _ in model.backbone.model.named_parameters() if "lora_" in name]


def merge_lora(model: SparseLatentModel) -> None:
    """Fold the adapters into the base weights and unwrap them, so the checkpoint holds plain
    block weights under their original names and loads like a fully fine-tuned one."""
    merge_adapters(model.backbone.model)


def trainable_state(model: torch.nn.Module, optimizer, scheduler) -> dict:
    """What a resumable run saves besides its own bookkeeping: the trainable parameters (LoRA adapters, or
    the blocks), the optimizer and scheduler, and torch's RNG."""
    return {"trainable": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state()}


def restore_trainable_state(model: torch.nn.Module, optimizer, scheduler, state: dict) -> None:
    """Put back what :func:`trainable_state` saved (tensors already on the run's device)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"].cpu())
