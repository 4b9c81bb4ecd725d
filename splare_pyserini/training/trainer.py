"""Fine-tune a backbone so that its SAE latents become a retrieval vocabulary (SPLARE).

The SAE is frozen by default (SPLARE); ``--train-sae`` trains it jointly (SAE-SPLADE's
end-to-end variant); ``--sae vocab`` trains the vocabulary-SPLADE twin with the same recipe.
Loss: InfoNCE over in-batch and BM25 hard negatives + FLOPS on documents and queries
(separate weights, quadratic warm-up) + optional distillation from a dense teacher.
Only the transformer blocks up to the layer train (embeddings and projection frozen).

    python -m splare_pyserini.train --dataset scifact --mode in-domain --output models/splare-minilm-scifact

``--mode in-domain`` uses ``qrels/train.tsv``; ``--mode zero-shot`` uses self-supervised pairs
from the corpus only. The output folder is a checkpoint ``--model`` loads; rerunning the same
command resumes from ``<output>/state``.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__
from .atomic import atomic_dir
from .backbone import DEFAULT_MODEL
from .checkpoint import save_checkpoint
from .encoder import EncoderSettings, SaeSparseEncoder
from .errors import InputError, cli_main
from .losses import contrastive_loss, distillation_kl, flops, margin_mse, quadratic_warmup
from .pairs import Pair, add_bm25_negatives, corpus_texts, joined, self_supervised_pairs, supervised_pairs
from .vocab import VOCAB


@dataclass
class TrainConfig:
    dataset: str = "scifact"
    output: str = "models/splare-minilm"
    mode: str = "in-domain"
    model: str = DEFAULT_MODEL
    sae: str | None = None
    layer: int | None = None
    steps: int = 200
    batch_size: int = 16
    lr: float = 5e-5
    warmup_steps: int = 20
    temperature: float = 1.0  # InfoNCE temperature on the dot products
    lambda_d: float = 1e-3
    lambda_q: float = 1e-3
    flops_warmup: int = 100
    query_max_length: int = 64
    doc_max_length: int = 192
    negatives_depth: int = 30
    train_sae: bool = False
    lora_rank: int = 0  # 0: full fine-tuning of the blocks; > 0: LoRA (peft) on their linear layers
    lora_alpha: float = 32.0
    distill: str | None = None  # "kl" or "margin-mse", teacher = dense all-MiniLM-L6-v2
    distill_weight: float = 1.0
    seed: int = 0
    save_every: int = 50
    fp16: bool = True


def build_pairs(cfg: TrainConfig, cache: Path) -> tuple[list[Pair], dict[str, str]]:
    if cfg.mode == "in-domain":
        pairs = supervised_pairs(cfg.dataset, "train")
    elif cfg.mode == "zero-shot":
        pairs = self_supervised_pairs(cfg.dataset, seed=cfg.seed)
    else:
        raise InputError(f"--mode must be in-domain or zero-shot, got {cfg.mode!r}")
    if not pairs:
        raise InputError(f"{cfg.dataset}: no training pairs for --mode {cfg.mode}")
    from .data import resolve_beir_folder

    add_bm25_negatives(pairs, cfg.dataset, cache, depth=cfg.negatives_depth)
    docs = {doc_id: joined(*fields) for doc_id, fields in corpus_texts(resolve_beir_folder(cfg.dataset)).items()}
    return pairs, docs


def trainable_names(encoder: SaeSparseEncoder, train_sae: bool) -> list[str]:
    """Unfreeze the transformer blocks (and the SAE if asked); return the backbone names saved."""
    model = encoder.model
    for param in model.parameters():
        param.requires_grad_(False)
    blocks = encoder.model.backbone.layers_name
    names = []
    for name, param in model.backbone.model.named_parameters():
        if name.startswith(blocks + "."):
            param.requires_grad_(True)
            names.append(name)
    if train_sae:
        for param in model.sae.parameters():
            param.requires_grad_(True)
    return names


def add_lora(encoder: SaeSparseEncoder, rank: int, alpha: float) -> None:
    """Replace full fine-tuning of the blocks by LoRA adapters (peft) on their linear layers;
    only the adapters (and the SAE, if it trains) keep ``requires_grad``."""
    from peft import LoraConfig, inject_adapter_in_model

    backbone = encoder.model.backbone.model
    prefix = encoder.model.backbone.layers_name + "."
    targets = [name for name, module in backbone.named_modules()
               if name.startswith(prefix) and isinstance(module, torch.nn.Linear)]
    for name, param in backbone.named_parameters():
        param.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets), backbone)


def merge_lora(encoder: SaeSparseEncoder) -> None:
    """Fold the adapters into the base weights and unwrap them, so the checkpoint holds plain
    block weights under their original names and loads like a fully fine-tuned one."""
    from peft.tuners.lora import LoraLayer

    backbone = encoder.model.backbone.model
    for name, module in list(backbone.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(backbone.get_submodule(parent_name) if parent_name else backbone, child, module.base_layer)


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.output = Path(cfg.output)
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        settings = EncoderSettings(model=cfg.model, sae=cfg.sae, layer=cfg.layer, max_length=cfg.doc_max_length)
        self.encoder = SaeSparseEncoder(settings)
        self.queries = self.encoder.with_options(max_length=cfg.query_max_length)
        self.names = trainable_names(self.encoder, cfg.train_sae)
        if cfg.lora_rank > 0:
            add_lora(self.encoder, cfg.lora_rank, cfg.lora_alpha)
        params = [p for p in self.encoder.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
        warm = max(cfg.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min((s + 1) / warm, max(0.0, (cfg.steps - s) / max(cfg.steps - warm, 1))))
        self.pairs, self.docs = build_pairs(cfg, self.output / "cache")
        self.order: list[int] = []
        self.step = 0
        self.teacher = None
        if cfg.distill:
            from .dense import DenseEncoder

            self.teacher = DenseEncoder(DEFAULT_MODEL)
        self.log: list[dict] = []

    # --- data -------------------------------------------------------------------------
    def next_batch(self) -> list[Pair]:
        batch, seen = [], set()
        while len(batch) < self.cfg.batch_size:
            if not self.order:
                self.order = list(range(len(self.pairs)))
                self.rng.shuffle(self.order)
            pair = self.pairs[self.order.pop()]
            if pair.positive_id in seen:  # a duplicate positive would be a false in-batch negative
                continue
            seen.add(pair.positive_id)
            batch.append(pair)
        return batch

    def negative_for(self, pair: Pair) -> str:
        pool = pair.negatives[: self.cfg.negatives_depth] or sorted(self.docs)
        return self.docs[self.rng.choice(pool)]

    # --- one step -------------------------------------------------------------------------
    def train_step(self) -> dict:
        cfg = self.cfg
        batch = self.next_batch()
        queries = [p.query for p in batch]
        documents = [p.positive_text for p in batch] + [self.negative_for(p) for p in batch]
        model = self.encoder.model.train()
        q = model(**self.queries.tokenize(queries))
        d = model(**self.encoder.tokenize(documents))
        rank = contrastive_loss(q, d, cfg.temperature)
        lq = quadratic_warmup(self.step, cfg.flops_warmup, cfg.lambda_q)
        ld = quadratic_warmup(self.step, cfg.flops_warmup, cfg.lambda_d)
        loss = rank + lq * flops(q) + ld * flops(d)
        extra = {}
        if self.teacher is not None:
            teacher = self.teacher.encode(queries) @ self.teacher.encode(documents).T / 0.05
            student = q @ d.T / cfg.temperature
            if cfg.distill == "kl":
                distill = distillation_kl(student, teacher)
            else:
                n = len(batch)
                idx = torch.arange(n)
                distill = margin_mse(torch.stack([student[idx, idx], student[idx, idx + n]], 1),
                                     torch.stack([teacher[idx, idx], teacher[idx, idx + n]], 1))
            loss = loss + cfg.distill_weight * distill
            extra["distill"] = round(distill.item(), 4)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"step": self.step, "loss": round(loss.item(), 4), "rank": round(rank.item(), 4), **extra,
                "nnz_q": round(float((q > 0).sum(1).float().mean()), 1),
                "nnz_d": round(float((d > 0).sum(1).float().mean()), 1)}

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        model = self.encoder.model
        return {"trainable": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "step": self.step, "order": self.order, "rng": self.rng.getstate(),
                "torch_rng": torch.get_rng_state(), "log": self.log, "config": asdict(self.cfg)}

    def save_state(self) -> None:
        with atomic_dir(self.output / "state") as tmp:
            torch.save(self.state_dict(), tmp / "state.pt")

    def load_state(self) -> bool:
        path = self.output / "state" / "state.pt"
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=False)
        if state["config"] != asdict(self.cfg):
            raise InputError(f"{path}: saved by a run with other settings; use a new --output")
        params = dict(self.encoder.model.named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.order, self.log = state["step"], state["order"], state["log"]
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        return True

    # --- run ------------------------------------------------------------------------------
    def fit(self) -> Path:
        resumed = self.load_state()
        started = time.time()
        with tqdm(total=self.cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True) as bar:
            while self.step < self.cfg.steps:
                record = self.train_step()
                self.log.append(record)
                bar.set_postfix({k: v for k, v in record.items() if k != "step"})
                bar.update(1)
                if self.step % self.cfg.save_every == 0 or self.step == self.cfg.steps:
                    self.save_state()
        seconds = time.time() - started
        return self.export(seconds, resumed)

    @torch.no_grad()
    def export(self, seconds: float, resumed: bool) -> Path:
        from .train_sae import calibrate_quant_scale
        from .activations import collect_activations

        if self.cfg.lora_rank > 0:
            merge_lora(self.encoder)
        model = self.encoder.model.eval()
        settings = self.encoder.settings
        sample = [self.docs[d] for d in sorted(self.docs)[:200]]
        acts = collect_activations(self.encoder, sample, max_tokens=20_000)
        scale = calibrate_quant_scale(model.sae, acts)
        projection = VOCAB if settings.sae == VOCAB else "sae"
        info = {"format": "splare-checkpoint/1", "base_model": self._base_model(), "layer": settings.layer,
                "projection": projection, "quant_scale": scale, "pooling": settings.pooling,
                **({"vocab_k": model.sae.k} if projection == VOCAB else {}),
                "splare_pyserini_version": __version__, "training": asdict(self.cfg),
                "pairs": len(self.pairs), "train_seconds_this_run": round(seconds, 1), "resumed": resumed,
                "final": self.log[-1] if self.log else None}
        final = self.output / "checkpoint"
        with atomic_dir(final) as tmp:
            save_checkpoint(tmp, model.backbone.model, info, self.names, self.cfg.fp16)
            if projection == "sae":
                if self.cfg.train_sae:
                    sae = model.sae.to(torch.float16) if self.cfg.fp16 else model.sae
                    sae.save_model(tmp / "sae")
                    model.sae.float()
                elif Path(settings.sae).is_dir():
                    shutil.copytree(settings.sae, tmp / "sae")
                else:  # a sae-lens release: store the frozen SAE in sae-lens's format
                    model.sae.save_model(tmp / "sae")
            (tmp / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.log))
        return final

    def _base_model(self) -> str:
        from .checkpoint import read_checkpoint

        ckpt = read_checkpoint(self.cfg.model)
        return ckpt.base_model if ckpt else self.cfg.model


def train(cfg: TrainConfig) -> Path:
    """Train and export; returns the checkpoint folder (``<output>/checkpoint``)."""
    return Trainer(cfg).fit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splare_pyserini.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            kind = type(value) if value is not None else str
            if name == "layer":
                kind = int
            parser.add_argument(flag, type=kind, default=value)
    args = parser.parse_args(argv)
    checkpoint = train(TrainConfig(**vars(args)))
    print(f"checkpoint: {checkpoint} (load with --model {checkpoint})", file=sys.stderr)


if __name__ == "__main__":
    cli_main(main)()
