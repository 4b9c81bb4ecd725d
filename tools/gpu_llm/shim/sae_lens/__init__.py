"""A stand-in for the slice of sae-lens that *loading and encoding* a saved TopK SAE uses, for a device
machine that has torch but not sae-lens (and no registry to install it from). Not shipped; checked
against the real sae-lens on the same weights before use (identical impacts)."""
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file
from torch import nn

from .saes.topk_sae import TopK


class _Metadata(dict):
    def __getattr__(self, name):
        return self.get(name)


class SAE(nn.Module):
    def __init__(self, cfg: dict, weights: dict, dtype: torch.dtype):
        super().__init__()
        self.cfg = SimpleNamespace(**{k: v for k, v in cfg.items() if k != "metadata"},
                                   metadata=_Metadata(cfg.get("metadata") or {}))
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            setattr(self, name, nn.Parameter(weights[name].to(dtype), requires_grad=False))
        self.activation_fn = TopK(int(cfg["k"]))
        self.dtype = dtype

    @classmethod
    def load_from_disk(cls, path, device="cpu", dtype="float32"):
        path = Path(path)
        cfg = json.loads((path / "cfg.json").read_text())
        if cfg.get("architecture") != "topk":
            raise NotImplementedError("the shim loads TopK SAEs only")
        return cls(cfg, load_file(path / "sae_weights.safetensors"), getattr(torch, dtype)).to(device)

    def process_sae_in(self, x):
        return x.to(self.dtype) - self.b_dec * self.cfg.apply_b_dec_to_input

    def encode(self, x):
        pre = self.process_sae_in(x) @ self.W_enc + self.b_enc
        if getattr(self.cfg, "rescale_acts_by_decoder_norm", False):
            pre = pre * self.W_dec.norm(dim=-1)
        return self.activation_fn(pre)


def _save_model(self, path):
    """sae-lens's save_model as a checkpoint export uses it: cfg.json and sae_weights.safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in vars(self.cfg).items() if k != "metadata"}
    cfg["metadata"] = dict(self.cfg.metadata)
    cfg["dtype"] = str(self.W_enc.dtype).replace("torch.", "")
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: getattr(self, n).detach().cpu().contiguous() for n in ("W_enc", "b_enc", "W_dec", "b_dec")},
              str(path / "sae_weights.safetensors"))


SAE.save_model = _save_model
