"""A Hugging Face model cut at one layer: only the blocks up to it run.

``layer=L`` means the residual stream after L transformer blocks, i.e. Hugging
Face's ``hidden_states[L]`` (1 <= L <= num_hidden_layers). We keep only the first
L blocks and stop the forward pass right after block L with a hook, so neither the
later blocks nor a final norm/pooler/LM head run.

Decoders (Llama, Gemma-3...) run causally by default; ``attention="bidirectional"`` replaces the
mask of every kept block, sliding-window ones included, by full attention over the real (non-pad)
tokens. Batches are padded on the right so that, with either mask, a text's real tokens compute what
they compute alone. A decoder whose tokenizer adds no beginning-of-sequence token gets one prepended
(:attr:`LayerBackbone.prepend_id`): the first position of a decoder is an attention sink whose hidden
states dwarf the rest, so it is a fixed special token that pooling skips,
not the text's first word.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..errors import ArtifactError
from .settings import ATTENTIONS


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


def native_attention(blocks: nn.Module) -> str:
    """'causal' if an attention module of the blocks is causal (a decoder), else 'bidirectional'."""
    causal = any(getattr(module, "is_causal", False) is True for module in blocks.modules())
    return "causal" if causal else "bidirectional"


class LayerBackbone(nn.Module):
    """Runs a transformer up to ``layer`` and returns that layer's hidden states.

    ``attention``: None (the model's own), "causal" (decoders only) or "bidirectional" (for a decoder:
    full attention over real tokens in every kept block). ``prepend_id``: the token id the batcher puts
    first (set by :func:`load_backbone` for decoders whose tokenizer adds none)."""

    def __init__(self, model: nn.Module, layer: int, attention: str | None = None):
        super().__init__()
        n_layers = model.config.num_hidden_layers
        if not 1 <= layer <= n_layers:
            raise ArtifactError(f"layer {layer} is out of range: the model has {n_layers} layers (1..{n_layers})")
        if attention is not None and attention not in ATTENTIONS:
            raise ArtifactError(f"attention: {attention!r} is not one of {', '.join(ATTENTIONS)}")
        name, blocks = find_layer_list(model)
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        kept = nn.ModuleList(list(blocks)[:layer])
        setattr(parent, name.rsplit(".", 1)[-1], kept)
        self.model = model
        self.layers_name = name  # e.g. "encoder.layer" (BERT) or "layers" (Llama)
        self.layer = layer
        self.hidden_size = int(model.config.hidden_size)
        self.native_attention = native_attention(kept)
        self.attention = attention or self.native_attention
        self.prepend_id: int | None = None
        if self.attention == "causal" and self.native_attention != "causal":
            raise ArtifactError(f"attention 'causal': {type(model).__name__} is not a decoder (its attention is "
                                "bidirectional already)")
        self._full_mask = None
        self.bidirectional_decoder = self.attention == "bidirectional" and self.native_attention == "causal"
        if self.bidirectional_decoder:
            for module in kept.modules():
                if getattr(module, "is_causal", None) is True:
                    module.is_causal = False  # what SDPA/flash read when no explicit mask is passed
            for block in kept:
                block.register_forward_pre_hook(self._bidirectional_mask, with_kwargs=True)
        self._captured: torch.Tensor | None = None
        kept[layer - 1].register_forward_hook(self._capture)

    def _bidirectional_mask(self, module, args, kwargs):
        if "attention_mask" not in kwargs:
            raise ArtifactError(f"bidirectional attention: the blocks of {type(self.model).__name__} take no "
                                "attention_mask keyword to replace")
        kwargs["attention_mask"] = self._full_mask
        return args, kwargs

    def full_attention_mask(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The mask of full attention over real tokens, in the format of the model's attention kernel
        (None when nothing is padded: SDPA then runs unmasked, as ``is_causal`` is off)."""
        from transformers.masking_utils import create_bidirectional_mask

        dtype = next(self.model.parameters()).dtype
        shape_only = torch.empty((*attention_mask.shape, 1), dtype=dtype, device=attention_mask.device)
        return create_bidirectional_mask(config=self.model.config, inputs_embeds=shape_only,
                                         attention_mask=attention_mask)

    def _capture(self, _module, _inputs, output):
        self._captured = output[0] if isinstance(output, (tuple, list)) else output
        raise _StopForward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self._captured = None
        if self.bidirectional_decoder:
            self._full_mask = self.full_attention_mask(attention_mask)
        try:
            self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
        finally:
            self._full_mask = None
        if self._captured is None:
            raise ArtifactError(f"the hook after block {self.layer} did not fire: {type(self.model).__name__} "
                                "does not run its blocks as a ModuleList")
        hidden, self._captured = self._captured, None
        if hidden.dtype == torch.float16 and not torch.isfinite(hidden).all():
            raise ArtifactError(f"{type(self.model).__name__} overflows float16 by layer {self.layer} (non-finite "
                                "hidden states, as Gemma's residual stream does); use bfloat16 or float32")
        return hidden


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "corrupt or unreadable file"


def adds_leading_special(tokenizer) -> bool:
    """Whether the tokenizer itself starts every text with a special token (BERT's [CLS], Gemma's <bos>)."""
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] in set(tokenizer.all_special_ids)


ADAPTED_FILE = "splare_adapted.json"  # what `splare_pyserini.adapt` writes into a model folder it adapted


def adapted_attention(path: str) -> str | None:
    """The attention a model folder was adapted to (``adapt``'s record), which is its default; None if none."""
    record = Path(path) / ADAPTED_FILE
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text(encoding="utf-8"))["attention"]
    except (ValueError, KeyError) as err:
        raise ArtifactError(f"{record}: not an adaptation record ({type(err).__name__}: {err})") from err


def load_backbone(name_or_path: str, layer: int, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  masked_lm: bool = False, attention: str | None = None):
    """Load (tokenizer, LayerBackbone); decoders get a pad token if they lack one, right padding, and a
    beginning-of-sequence token to prepend if their tokenizer adds none. ``masked_lm`` loads the model
    with its MLM head (``AutoModelForMaskedLM``), for SPLADE models whose vocabulary is that head's."""
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    from .fetch import fetched_path

    path = fetched_path(name_or_path)
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
    tokenizer.padding_side = "right"  # positions count from the first real token, as for a text alone
    model.eval().to(device)
    backbone = LayerBackbone(model, layer, attention or adapted_attention(path))
    if backbone.native_attention == "causal" and not adds_leading_special(tokenizer):
        sink = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if sink is None:
            raise ArtifactError(f"model {name_or_path!r}: a decoder whose tokenizer has no bos or eos token to "
                                "start texts with")
        backbone.prepend_id = int(sink)
    return tokenizer, backbone


MAX_CHARS_PER_TOKEN = 50  # texts are cut to max_length * this many characters before tokenizing


class TextBatcher:
    """Tokenization as every consumer of a backbone does it: texts capped (a 1 MB document costs no
    more than its first tokens), padded batches, and a mask of the real tokens (no padding, no special
    tokens) that pooling and SAE training read. Shared by the encoder, activation collection and the bench.
    ``prepend``: a token id put before every text (a decoder's beginning-of-sequence sink), within
    ``max_length`` and outside the token mask."""

    def __init__(self, tokenizer, device: str = "cpu", prepend: int | None = None):
        self.tokenizer = tokenizer
        self.device = device
        self.prepend = prepend

    @classmethod
    def for_backbone(cls, tokenizer, backbone: "LayerBackbone", device: str | None = None) -> "TextBatcher":
        """Batches for ``backbone``, on ``device`` or else wherever the backbone's weights are."""
        if device is None:
            device = str(next(backbone.parameters()).device)
        return cls(tokenizer, device, getattr(backbone, "prepend_id", None))

    def tokenize(self, texts: Sequence[str], max_length: int, offsets: bool = False) -> dict[str, torch.Tensor]:
        """The tokenizer's padded batch (CPU) with the prepended token, if any, as a special token at
        position 0 (offsets (0, 0)); ``max_length`` counts it."""
        cap = max_length * MAX_CHARS_PER_TOKEN
        extra = 1 if self.prepend is not None else 0
        batch = dict(self.tokenizer([t[:cap] for t in texts], padding=True, truncation=True,
                                    max_length=max_length - extra, return_tensors="pt",
                                    return_special_tokens_mask=True, return_offsets_mapping=offsets))
        if extra:
            n = batch["input_ids"].shape[0]
            first = {"input_ids": self.prepend, "attention_mask": 1, "special_tokens_mask": 1}
            for key, value in first.items():
                batch[key] = torch.cat([torch.full((n, 1), value, dtype=batch[key].dtype), batch[key]], dim=1)
            if offsets:
                batch["offset_mapping"] = torch.cat([torch.zeros((n, 1, 2), dtype=batch["offset_mapping"].dtype),
                                                     batch["offset_mapping"]], dim=1)
        return batch

    def __call__(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        return self.collate(self.encode_all(texts, max_length))

    def encode_all(self, texts: Sequence[str], max_length: int) -> list[tuple[list[int], list[int]]]:
        """(token ids, special-token flags) of every text, unpadded, the prepended token included: one
        tokenizer pass that gives both the lengths batches are sorted by and the batches themselves."""
        cap = max_length * MAX_CHARS_PER_TOKEN
        extra = [self.prepend] if self.prepend is not None else []
        enc = self.tokenizer([t[:cap] for t in texts], truncation=True, max_length=max_length - len(extra),
                             return_special_tokens_mask=True, return_attention_mask=False,
                             return_token_type_ids=False)
        flag = [1] * len(extra)
        return [(extra + ids, flag + special) for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"])]

    def window_room(self, max_length: int) -> tuple[int, int]:
        """(content tokens per window, special tokens around them) for windows of ``max_length`` tokens."""
        wrap = (1 if self.prepend is not None else 0) + self.tokenizer.num_special_tokens_to_add(pair=False)
        if max_length - wrap < 1:
            raise ValueError(f"max_length: {max_length} leaves no room for text beside {wrap} special tokens")
        return max_length - wrap, wrap

    def encode_windows(self, texts: Sequence[str], max_length: int,
                       windows: int = 1) -> tuple[list[tuple[list[int], list[int]]], list[int], int]:
        """Every text as up to ``windows`` windows of at most ``max_length`` tokens: the items, the index of
        the text each belongs to, and how many texts filled them all (were truncated). A text that fits
        one window is ``encode_all``'s item; a longer one is cut into the fewest windows that hold it, of
        near-equal length (no short remnant with little context), each wrapped in the tokenizer's own
        leading and trailing special tokens and the prepended one."""
        if windows == 1:
            items = self.encode_all(texts, max_length)
            return items, list(range(len(items))), sum(1 for ids, _ in items if len(ids) >= max_length)
        room, wrap = self.window_room(max_length)
        out: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        truncated = 0
        for text_index, (ids, special) in enumerate(self.encode_all(texts, room * windows + wrap)):
            truncated += len(special) - sum(special) >= room * windows
            cut = cut_windows(ids, special, room)
            out += cut
            owner += [text_index] * len(cut)
        return out, owner, truncated

    def collate(self, items: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """A right-padded batch on the device, with the mask of real tokens (no padding, no special tokens)."""
        width = max((len(ids) for ids, _ in items), default=0)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0  # masked out
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in items], dtype=torch.long)
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in items], dtype=torch.long)
        special = torch.tensor([sp + [1] * (width - len(sp)) for _, sp in items], dtype=torch.bool)
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention.to(self.device),
                "token_mask": (attention.bool() & ~special).to(self.device)}

    def lengths(self, texts: Sequence[str], max_length: int) -> list[int]:
        """Token counts (special tokens included, after truncation): the sort key of length-sorted batching."""
        return [len(ids) for ids, _ in self.encode_all(texts, max_length)]


def cut_windows(ids: list[int], special: list[int], room: int) -> list[tuple[list[int], list[int]]]:
    """One tokenized text (ids, special-token flags) as the fewest windows of at most ``room`` content
    tokens, of near-equal length, each with the text's leading and trailing special tokens (the text
    itself when it fits)."""
    content = [p for p, flag in enumerate(special) if not flag]
    first, last = (content[0], content[-1] + 1) if content else (0, 0)
    if last - first <= room:
        return [(ids, special)]
    size = -(-(last - first) // -(-(last - first) // room))
    return [(ids[:first] + ids[start:end] + ids[last:], special[:first] + special[start:end] + special[last:])
            for start, end in ((s, min(s + size, last)) for s in range(first, last, size))]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar length, longest first (less padding); ties keep input order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def collect_activations(batcher: TextBatcher, backbone: LayerBackbone, texts: Sequence[str], max_length: int,
                        batch_size: int = 32, max_tokens: int | None = None) -> torch.Tensor:
    """(N, d_in) float32 hidden states of every real token, longest texts first, at most ``max_tokens``."""
    parts, total = [], 0
    with tqdm(total=len(texts), desc="activations", unit="text", dynamic_ncols=True) as bar:
        items = batcher.encode_all(texts, max_length)  # one tokenizer pass: the sort key and the batches
        for idx in length_sorted_batches([len(ids) for ids, _ in items], batch_size):
            batch = batcher.collate([items[i] for i in idx])
            hidden = backbone(batch["input_ids"], batch["attention_mask"])
            states = hidden[batch["token_mask"]].float().cpu()
            parts.append(states)
            total += states.shape[0]
            bar.update(len(idx))
            bar.set_postfix(tokens=total)
            if max_tokens is not None and total >= max_tokens:
                break
    acts = torch.cat(parts) if parts else torch.zeros(0, backbone.hidden_size)
    return acts[:max_tokens] if max_tokens is not None else acts
