"""Which parameters train: the transformer blocks up to the layer (fully, or through LoRA
adapters), and the SAE only when asked. Embeddings and everything after the layer stay frozen."""
from __future__ import annotations

import torch

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


def add_lora(model: SparseLatentModel, rank: int, alpha: float) -> None:
    """Replace full fine-tuning of the blocks by LoRA adapters (peft) on their linear layers;
    only the adapters (and the SAE, if it trains) keep ``requires_grad``."""
    from peft import LoraConfig, inject_adapter_in_model

    backbone = model.backbone.model
    prefix = model.backbone.layers_name + "."
    targets = [name for name, module in backbone.named_modules()
               if name.startswith(prefix) and isinstance(module, torch.nn.Linear)]
    for param in backbone.parameters():
        param.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets), backbone)


def merge_lora(model: SparseLatentModel) -> None:
    """Fold the adapters into the base weights and unwrap them, so the checkpoint holds plain
    block weights under their original names and loads like a fully fine-tuned one."""
    from peft.tuners.lora import LoraLayer

    backbone = model.backbone.model
    for name, module in list(backbone.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(backbone.get_submodule(parent_name) if parent_name else backbone, child, module.base_layer)
