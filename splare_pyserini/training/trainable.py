"""Which parameters train: the transformer blocks up to the layer (fully, or through LoRA
adapters), and the SAE only when asked. Embeddings and everything after the layer stay frozen. Also what
``train`` and ``adapt`` share to stay resumable: the saved trainable state, the recipe check, the step loop."""
from __future__ import annotations

import time
from typing import Callable

import torch
from tqdm import tqdm

from ..errors import InputError
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


RESUMABLE_ANYWHERE = ("device",)  # settings a saved state may be resumed under with another value


def require_same_recipe(path, saved: dict, current: dict, what: str = "saved by a run with other settings") -> None:
    """Refuse to resume (or reuse) ``path`` when its recorded settings differ from this run's, apart from
    :data:`RESUMABLE_ANYWHERE`: a state trained under one recipe must not be continued under another."""
    def recipe(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in RESUMABLE_ANYWHERE}

    if recipe(saved) != recipe(current):
        raise InputError(f"{path}: {what}; use a new output folder")


def run_steps(loop, desc: str, postfix: Callable[[dict], dict]) -> float:
    """Step ``loop`` (``step``, ``log``, ``cfg.steps``, ``cfg.save_every``, ``train_step()``, ``save_state()``)
    to ``cfg.steps`` under a progress bar, saving its state every ``save_every`` steps and at the end, so that a
    killed run resumes where it stopped; returns the seconds this run spent."""
    started = time.time()
    with tqdm(total=loop.cfg.steps, initial=loop.step, desc=desc, unit="step", dynamic_ncols=True) as bar:
        while loop.step < loop.cfg.steps:
            record = loop.train_step()
            loop.log.append(record)
            bar.set_postfix(postfix(record))
            bar.update(1)
            if loop.step % loop.cfg.save_every == 0 or loop.step == loop.cfg.steps:
                loop.save_state()
    return time.time() - started
