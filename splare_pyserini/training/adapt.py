"""Masked next-token adaptation (LLM2Vec's MNTP): teach a decoder LLM to use bidirectional attention.

A causal LLM run with full attention is a different model from the one it was trained as: every
state now mixes in later tokens it never saw in training. SPLARE's 2B recipe first adapts the LLM,
as LLM2Vec does: a share of each text's tokens is replaced by a mask token, every block attends
bidirectionally, and LoRA adapters on every block learn to predict each masked token from the
state at the position *before* it (the LM head's own next-token reading, so nothing new is added).
Only unlabeled text is used (documents and non-test queries of the sources).

    python -m splare_pyserini.adapt --model smollm2-135m --input scifact nfcorpus --output models/smollm2-mntp

The output folder is a plain Hugging Face model (adapters merged; its tokenizer beside it) that
``--model`` takes in every command; its ``splare_adapted.json`` records that it is bidirectional,
which becomes its default attention there. Rerunning the same command resumes from ``<output>.state``.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import __version__
from ..config import check_fields, option, parse_config, require
from ..datasets import training_texts
from ..errors import ArtifactError, InputError, cli_main
from ..io import atomic_dir
from ..model.backbone import ADAPTED_FILE, LayerBackbone, TextBatcher, adds_leading_special
from ..model.checkpoint import inject_lora, merge_adapters
from .trainable import linear_targets, require_same_recipe, restore_trainable_state, run_steps, trainable_state
from .trainer import warmup_then_linear_decay

__all__ = ["AdaptConfig", "Adapter", "adapt", "mask_tokens", "mntp_loss"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    input: tuple[str, ...] = option(help="one or more BEIR folders or names, JSONL files or ir_datasets ids (their "
                                         "documents, and queries of every split but test; no judgments)")
    output: str = option(help="folder of the adapted model (a Hugging Face model folder)")
    model: str = option(help="the decoder LLM: a short name (smollm2-135m, gemma-3-270m), hub id or folder")
    steps: int = option(1000, "optimizer steps (LLM2Vec: 1,000)")
    batch_size: int = option(32, "texts per step")
    lr: float = option(5e-5, "peak learning rate (AdamW)")
    warmup_steps: int = option(100, "linear learning-rate warm-up, then linear decay to 0 at --steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    clip_norm: float = option(1.0, "gradient norm clipping")
    lora_rank: int = option(16, "LoRA rank of the adapters on every block's linear layers")
    lora_alpha: float = option(32.0, "LoRA alpha")
    mask_prob: float = option(0.2, "share of each text's real tokens replaced by the mask token")
    mask_token: str | None = option(None, "the mask token (default: the tokenizer's own, else '_', as LLM2Vec)")
    max_length: int = option(128, "tokens kept per text")
    seed: int = option(0, "seed of adapters, text sampling and masking")
    save_every: int = option(50, "steps between saved training states")
    device: str = option("cpu", "torch device (e.g. cuda); a run may resume on another")

    def __post_init__(self) -> None:
        check_fields(self)
        require(bool(self.input), "input: one or more text sources")
        for name in ("steps", "batch_size", "lora_rank", "max_length", "save_every"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "weight_decay"):
            require(getattr(self, name) >= 0, f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "clip_norm", "lora_alpha"):
            require(getattr(self, name) > 0, f"{name}: must be > 0, got {getattr(self, name)}")
        require(0 < self.mask_prob < 1, f"mask_prob: must be in (0, 1), got {self.mask_prob}")


def mask_token_id(tokenizer, mask_token: str | None) -> int:
    """The id a masked position gets: ``mask_token`` as one token, the tokenizer's own mask, else ``_``."""
    if mask_token is None and tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    text = mask_token or "_"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(f"mask_token: {text!r} is {len(ids)} tokens for this tokenizer, not one")
    return int(ids[0])


def mask_tokens(input_ids: torch.Tensor, token_mask: torch.Tensor, mask_id: int, prob: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels): each real token (``token_mask``, never a text's first position) is
    replaced by ``mask_id`` with probability ``prob``, at least one per batch; labels hold the original
    id there and -100 elsewhere."""
    eligible = token_mask.clone()
    eligible[:, 0] = False  # nothing before it to predict it from
    draw = torch.rand(input_ids.shape, generator=generator, device="cpu").to(input_ids.device)
    chosen = eligible & (draw < prob)
    if not chosen.any():
        if not eligible.any():
            raise InputError("no token to mask: every text of the batch is a single token or empty")
        first = eligible.flatten().nonzero()[0]
        chosen.view(-1)[first] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return torch.where(chosen, torch.full_like(input_ids, mask_id), input_ids), labels


def mntp_loss(hidden: torch.Tensor, labels: torch.Tensor, final_norm, lm_head, softcap: float | None) -> torch.Tensor:
    """Cross-entropy of each masked token (``labels`` != -100 at position i) read from the final state at
    position i - 1, through the model's final norm and LM head; logits only where they are needed."""
    target = labels[:, 1:]
    where = target != -100
    states = final_norm(hidden[:, :-1][where])
    logits = lm_head(states).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits, target[where])


def load_causal_lm(name: str, device: str):
    """(tokenizer, causal LM, LayerBackbone over all its blocks, bidirectional) of a decoder LLM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..model.fetch import fetched_path

    path = fetched_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot load {name!r} as a causal LM: {str(err).strip().splitlines()[0]}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    backbone = LayerBackbone(model, model.config.num_hidden_layers, attention="bidirectional")
    if backbone.native_attention != "causal":
        raise InputError(f"model: {name!r} is not a decoder (its attention is bidirectional already); "
                         "adaptation is for causal LLMs")
    if not adds_leading_special(tokenizer):
        sink = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        backbone.prepend_id = None if sink is None else int(sink)
    return tokenizer, model.to(device), backbone


class Adapter:
    """Model, adapters, optimizer and text stream of one adaptation run; resumable from ``<output>.state``."""

    def __init__(self, cfg: AdaptConfig):
        self.cfg = cfg
        self.output = Path(cfg.output)
        self.state_dir = self.output.with_name(self.output.name + ".state")
        torch.manual_seed(cfg.seed)
        self.texts = [t for source in cfg.input for t in training_texts(source)]
        if not self.texts:
            raise InputError(f"input: no text in {', '.join(cfg.input)}")
        self.tokenizer, self.model, self.backbone = load_causal_lm(cfg.model, cfg.device)
        self.batcher = TextBatcher.for_backbone(self.tokenizer, self.backbone, cfg.device)
        self.mask_id = mask_token_id(self.tokenizer, cfg.mask_token)
        decoder = self.model.get_decoder()
        self.final_norm = getattr(decoder, "norm", None)
        if self.final_norm is None:
            raise ArtifactError(f"{type(self.model).__name__}: no final norm (.norm) to read masked tokens through")
        self.lm_head = self.model.get_output_embeddings()
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.lora = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha,
                     "target_modules": linear_targets(self.model, self.backbone.layers_name)}
        inject_lora(self.model, self.lora)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, functools.partial(
            warmup_then_linear_decay, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps))
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.log: list[dict] = []

    def batch_loss(self, texts: list[str]) -> torch.Tensor:
        batch = self.batcher(texts, self.cfg.max_length)
        inputs, labels = mask_tokens(batch["input_ids"], batch["token_mask"], self.mask_id, self.cfg.mask_prob,
                                     self.generator)
        hidden = self.backbone(inputs, batch["attention_mask"])
        return mntp_loss(hidden, labels, self.final_norm, self.lm_head, self.softcap)

    def train_step(self) -> dict:
        picks = torch.randint(len(self.texts), (self.cfg.batch_size,), generator=self.generator)
        self.model.train()
        loss = self.batch_loss([self.texts[i] for i in picks.tolist()])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"step": self.step, "loss": round(loss.item(), 4)}

    def save_state(self) -> None:
        state = {**trainable_state(self.model, self.optimizer, self.scheduler), "step": self.step,
                 "generator": self.generator.get_state(), "log": self.log, "config": asdict(self.cfg)}
        with atomic_dir(self.state_dir) as tmp:
            torch.save(state, tmp / "state.pt")

    def load_state(self) -> bool:
        path = self.state_dir / "state.pt"
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=False, map_location=self.cfg.device)
        require_same_recipe(path, state["config"], asdict(self.cfg))
        restore_trainable_state(self.model, self.optimizer, self.scheduler, state)
        self.step, self.log = state["step"], state["log"]
        self.generator.set_state(state["generator"])
        log.info("resuming %s at step %d", self.output, self.step)
        return True

    def fit(self) -> Path:
        resumed = self.load_state()
        seconds = run_steps(self, "adapt (MNTP)", lambda record: {"loss": record["loss"]})
        return self.export(seconds, resumed)

    def export(self, seconds: float, resumed: bool) -> Path:
        """The merged model, its tokenizer, ``splare_adapted.json`` and a model card, written at once."""
        from ..model.artifacts import content_hash
        from ..model.fetch import fetched_path

        merge_adapters(self.model)
        self.model.eval()
        first = [r["loss"] for r in self.log[:10]]
        last = [r["loss"] for r in self.log[-10:]]
        record = {"attention": "bidirectional", "adaptation": "masked next-token prediction (LLM2Vec)",
                  "base_model": self.cfg.model, "base_model_hash": content_hash(fetched_path(self.cfg.model)),
                  "mask_token_id": self.mask_id, "texts": len(self.texts), "config": asdict(self.cfg),
                  "loss_first_10_steps": round(sum(first) / len(first), 4) if first else None,
                  "loss_last_10_steps": round(sum(last) / len(last), 4) if last else None,
                  "seconds_this_run": round(seconds, 1), "resumed": resumed,
                  "splare_pyserini_version": __version__}
        with atomic_dir(self.output) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            (tmp / ADAPTED_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            (tmp / "README.md").write_text(model_card(record), encoding="utf-8")
        return self.output


def model_card(r: dict) -> str:
    c = r["config"]
    loss = (f"{r['loss_first_10_steps']} (first 10 steps) -> {r['loss_last_10_steps']} (last 10)"
            if r["loss_first_10_steps"] is not None else "n/a")
    return (f"# {r['base_model']}, adapted to bidirectional attention (masked next-token prediction)\n\n"
            f"Made by `python -m splare_pyserini.adapt` (LLM2Vec's MNTP step): every block attends to every real "
            f"token; {c['mask_prob']:.0%} of each text's tokens were replaced by token id {r['mask_token_id']}, and "
            f"LoRA adapters (rank {c['lora_rank']}, alpha {c['lora_alpha']:g}) on every block's linear layers learned "
            f"to predict each from the state before it through the LM head; the adapters are merged here.\n\n"
            f"- base: `{r['base_model']}` (content hash {r['base_model_hash']}); its license applies\n"
            f"- text: {', '.join(c['input'])} ({r['texts']:,} texts: documents and non-test queries; no judgments), "
            f"at most {c['max_length']} tokens each\n"
            f"- training: {c['steps']} steps x {c['batch_size']} texts, lr {c['lr']:g}, seed {c['seed']}\n"
            f"- masked-token loss: {loss}\n\n"
            f"`--model <this folder>` runs it bidirectionally by default (recorded in `{ADAPTED_FILE}`).\n")


def adapt(cfg: AdaptConfig) -> Path:
    """Adapt (or resume) and write the merged model folder; returns it."""
    record = Path(cfg.output) / ADAPTED_FILE
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8")).get("config", {})
        wanted = json.loads(json.dumps(asdict(cfg)))  # as the record holds it (tuples as lists)
        require_same_recipe(record, saved, wanted, f"{cfg.output} holds a model adapted with other settings")
        log.info("%s is already adapted", cfg.output)
        return Path(cfg.output)
    return Adapter(cfg).fit()


def main(argv: list[str] | None = None) -> None:
    folder = adapt(parse_config(AdaptConfig, argv, "python -m splare_pyserini.adapt", __doc__))
    log.info("adapted model: %s (use with --model %s)", folder, folder)


cli = cli_main(main, resumable=True)

if __name__ == "__main__":
    cli()
