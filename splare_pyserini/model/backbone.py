"""A Hugging Face model cut at one layer: only the blocks up to it run.

``layer=L`` means the residual stream after L transformer blocks, i.e. Hugging
Face's ``hidden_states[L]`` (1 <= L <= num_hidden_layers). We keep only the first
L blocks and stop the forward pass right after block L with a hook, so neither the
later blocks nor a final norm/pooler/LM head run.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from ..errors import ArtifactError
from .artifacts import resolve_path


class _StopForward(Exception):
    """Raised by the hook after the chosen block so nothing after it runs."""


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks (encoder ``layer`` or decoder ``layers``)."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    candidates = [(name, mod) for name, mod in model.named_modules()
                  if isinstance(mod, nn.ModuleList) and len(mod) == n_layers]
    if not candidates:
        raise ArtifactError(f"cannot find the {n_layers} transformer blocks of {type(model).__name__}")
    return min(candidates, key=lambda item: item[0].count("."))


class LayerBackbone(nn.Module):
    """Runs a transformer up to ``layer`` and returns that layer's hidden states."""

    def __init__(self, model: nn.Module, layer: int):
        super().__init__()
        n_layers = model.config.num_hidden_layers
        if not 1 <= layer <= n_layers:
            raise ArtifactError(f"layer {layer} is out of range: the model has {n_layers} layers (1..{n_layers})")
        name, blocks = find_layer_list(model)
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], nn.ModuleList(list(blocks)[:layer]))
        self.model = model
        self.layers_name = name  # e.g. "encoder.layer" (BERT) or "layers" (Llama)
        self.layer = layer
        self.hidden_size = int(model.config.hidden_size)
        self._captured: torch.Tensor | None = None
        self.model.get_submodule(name)[layer - 1].register_forward_hook(self._capture)

    def _capture(self, _module, _inputs, output):
        self._captured = output[0] if isinstance(output, (tuple, list)) else output
        raise _StopForward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self._captured = None
        try:
            self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
        if self._captured is None:
            raise ArtifactError(f"the hook after block {self.layer} did not fire: {type(self.model).__name__} "
                                "does not run its blocks as a ModuleList")
        hidden, self._captured = self._captured, None
        return hidden


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "corrupt or unreadable file"


def load_backbone(name_or_path: str, layer: int, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  masked_lm: bool = False):
    """Load (tokenizer, LayerBackbone); decoders get a pad token if they lack one. ``masked_lm`` loads the
    model with its MLM head (``AutoModelForMaskedLM``), for SPLADE models whose vocabulary is that head's."""
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    path = resolve_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = (AutoModelForMaskedLM if masked_lm else AutoModel).from_pretrained(path, dtype=dtype)
    except OSError as err:  # missing files, unknown hub id, no network
        hint = "" if os.environ.get("HF_HUB_OFFLINE") != "1" else " (HF_HUB_OFFLINE=1 is set)"
        raise ArtifactError(f"cannot load model {name_or_path!r}{hint}: {_first_line(err)}") from err
    except Exception as err:  # corrupt weights or config (safetensors, json, shape errors)
        raise ArtifactError(f"cannot load model {name_or_path!r} ({type(err).__name__}): {_first_line(err)}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.eval().to(device)
    return tokenizer, LayerBackbone(model, layer)


MAX_CHARS_PER_TOKEN = 50  # texts are cut to max_length * this many characters before tokenizing


class TextBatcher:
    """Tokenization as every consumer of a backbone does it: texts capped (a 1 MB document costs no
    more than its first tokens), padded batches, and a mask of the real tokens (no padding, no special
    tokens) that pooling and SAE training read. Shared by the encoder, activation collection and the bench."""

    def __init__(self, tokenizer, device: str = "cpu"):
        self.tokenizer = tokenizer
        self.device = device

    def __call__(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        cap = max_length * MAX_CHARS_PER_TOKEN
        batch = self.tokenizer([t[:cap] for t in texts], padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt", return_special_tokens_mask=True)
        token_mask = batch["attention_mask"].bool() & ~batch["special_tokens_mask"].bool()
        return {"input_ids": batch["input_ids"].to(self.device),
                "attention_mask": batch["attention_mask"].to(self.device),
                "token_mask": token_mask.to(self.device)}

    def lengths(self, texts: Sequence[str], max_length: int) -> list[int]:
        """Token counts (special tokens included, after truncation): the sort key of length-sorted batching."""
        cap = max_length * MAX_CHARS_PER_TOKEN
        enc = self.tokenizer([t[:cap] for t in texts], truncation=True, max_length=max_length,
                             add_special_tokens=True)
        return [len(ids) for ids in enc["input_ids"]]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar length, longest first (less padding); ties keep input order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
