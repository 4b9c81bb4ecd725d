"""Trained SPLARE checkpoints: only what training changed, on top of a base model.

A checkpoint folder holds ``splare.json`` (base model, layer, projection, quantization
scale, how it was trained), ``backbone.safetensors`` (the trained backbone parameters
only; fp16 when shipped) and, for SAE projections, ``sae/`` in sae-lens's own format.
``--model <folder>`` loads it; the SAE inside is used unless ``--sae`` says otherwise. A
checkpoint may instead name a shipped SAE (``"sae": "<name>"``) so that the SAE is not stored twice.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ArtifactError

CHECKPOINT_FILE = "splare.json"
WEIGHTS_FILE = "backbone.safetensors"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    base_model: str
    layer: int
    projection: str  # "sae" or "vocab"
    quant_scale: float | None
    sae: str | None = None  # a shipped SAE's name, used when the folder has no sae/ of its own

    @property
    def projection_spec(self) -> str:
        from .sae import PACKAGED_MODELS
        from .vocab import VOCAB

        if self.projection == VOCAB:
            return VOCAB
        if (self.path / "sae").is_dir() or not self.sae:
            return str(self.path / "sae")
        return str(PACKAGED_MODELS / self.sae)  # e.g. the shipped default shares the shipped SAE


def read_checkpoint(model: str) -> Checkpoint | None:
    """The checkpoint at ``model``, or None if ``model`` is a plain model id/folder."""
    path = Path(model)
    info_path = path / CHECKPOINT_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        return Checkpoint(path, info["base_model"], int(info["layer"]), info["projection"], info.get("quant_scale"),
                          info.get("sae"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{info_path}: not a valid splare checkpoint ({type(err).__name__}: {err})") from None


def apply_checkpoint(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load the trained parameters into the (truncated) base model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = checkpoint.path / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{checkpoint.path}: missing {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise ArtifactError(f"{weights}: cannot load ({err})") from None
    missing_in_model = sorted(set(state) - set(model.state_dict()))
    if missing_in_model:
        raise ArtifactError(f"{weights}: parameters not in {checkpoint.base_model} cut at layer "
                            f"{checkpoint.layer}: {missing_in_model[:3]}")
    model.load_state_dict(state, strict=False)


def save_checkpoint(folder: Path, model: torch.nn.Module, info: dict, names: list[str], fp16: bool) -> None:
    """Write ``splare.json`` and the named (trained) parameters of ``model``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    dtype = torch.float16 if fp16 else torch.float32
    save_file({n: state[n].detach().to(dtype).contiguous() for n in names}, str(folder / WEIGHTS_FILE))
    (folder / CHECKPOINT_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
