"""Train a TopK SAE with sae-lens on a backbone's hidden states, offline.

For backbones without a public SAE (e.g. all-MiniLM-L6-v2). The SAE is saved in
sae-lens's own format (``SAE.load_from_disk`` reads it), optionally in fp16, with
a model card saying how it was made.

    python -m splare_pyserini.train_sae --input scifact --model sentence-transformers/all-MiniLM-L6-v2 \
        --layer 4 --d-sae 8192 --k 32 --steps 300 --output models/my-sae
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .atomic import atomic_dir, atomic_write
from .backbone import DEFAULT_MODEL, load_backbone
from .data import load_beir, looks_like_ir_datasets_id, load_ir_datasets, read_jsonl
from .errors import ArtifactError, cli_main


class _BackboneOnly:
    """Just enough of the encoder interface for tokenizing and running the backbone."""

    def __init__(self, model: str, layer: int, max_length: int):
        from .encoder import EncoderSettings, SaeSparseEncoder

        self.tokenizer, backbone = load_backbone(model, layer)
        self.settings = EncoderSettings(model=model, layer=layer, max_length=max_length)
        self.device = "cpu"
        self.model = torch.nn.Module()
        self.model.backbone = backbone
        self.tokenize = SaeSparseEncoder.tokenize.__get__(self)
        self.token_lengths = SaeSparseEncoder.token_lengths.__get__(self)


def training_texts(source: str) -> list[str]:
    """Documents and all queries of a BEIR folder, JSONL file or ir_datasets id."""
    if Path(source).is_file():
        return [r.text for r in read_jsonl(source)]
    if looks_like_ir_datasets_id(source):
        ds = load_ir_datasets(source)
    else:
        ds = load_beir(source, split="__all__")
    return [r.text for r in ds.corpus + ds.queries if r.text]


def train_sae(source: str, output: str | Path, model: str = DEFAULT_MODEL, layer: int = 4, d_sae: int = 8192,
              k: int = 32, steps: int = 300, batch_size: int = 4096, lr: float = 4e-4, max_length: int = 256,
              max_tokens: int | None = 2_000_000, seed: int = 0, fp16: bool = True,
              activations: torch.Tensor | None = None) -> Path:
    """Train and save a TopK SAE; returns the output folder. ``activations`` (hidden states at
    ``layer``, e.g. shared by the runs of a sweep) skips collecting them from ``source``."""
    from sae_lens import SAE
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from .activations import ShuffledBatches, collect_activations

    torch.manual_seed(seed)
    started = time.time()
    runner = _BackboneOnly(model, layer, max_length)
    acts = activations if activations is not None else collect_activations(runner, training_texts(source),
                                                                           max_tokens=max_tokens)
    seconds_acts = time.time() - started
    hook_name = f"{runner.model.backbone.layers_name}.{layer - 1}"  # output of block `layer`, i.e. hidden_states[layer]
    cfg = TopKTrainingSAEConfig(
        d_in=acts.shape[1], d_sae=d_sae, k=k, normalize_activations="expected_average_only_in",
        metadata=SAEMetadata(model_name=model, hook_name=hook_name, context_size=max_length))
    sae = TopKTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=lr, lr_end=lr / 10,
        lr_scheduler_name="cosineannealing", lr_warm_up_steps=min(20, steps // 10), device="cpu",
        dead_feature_window=max(1, steps // 4), feature_sampling_window=max(1, steps // 2),
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=20)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=ShuffledBatches(acts, batch_size, seed))
    trained = trainer.fit()
    seconds_train = time.time() - started - seconds_acts
    stats = reconstruction_stats(trained, acts[:20_000])
    trained.cfg.metadata["splare_quant_scale"] = calibrate_quant_scale(trained, acts[:20_000])

    output = Path(output)
    with atomic_dir(output) as tmp:
        trained.save_inference_model(tmp)
        if fp16:
            inference = SAE.load_from_disk(tmp, dtype="float16")
            inference.save_model(tmp)
        record = {"source": source, "model": model, "layer": layer, "hook_name": hook_name, "d_sae": d_sae, "k": k,
                  "steps": steps, "batch_size": batch_size, "lr": lr, "max_length": max_length, "seed": seed,
                  "training_tokens": steps * batch_size, "distinct_tokens": int(acts.shape[0]),
                  "seconds_activations": round(seconds_acts, 1), "seconds_training": round(seconds_train, 1),
                  "torch_threads": torch.get_num_threads(), "fp16": fp16,
                  "quant_scale": trained.cfg.metadata["splare_quant_scale"], **stats}
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(record))
    return output


@torch.inference_mode()
def calibrate_quant_scale(sae, acts: torch.Tensor, target: float = 100.0) -> float:
    """Scale that maps the 99th percentile of non-zero token weights log(1 + z) to ``target``.

    SAE latents have no fixed range (it follows the backbone's activation norms), so a
    fixed scale like SPLADE's 100 can round most weights to 1 or 2. Stored in the SAE's
    metadata as ``splare_quant_scale``; the encoder uses it unless --quant-scale is given.
    """
    weights = torch.log1p(torch.relu(sae.encode(acts.to(sae.W_enc.dtype)))).float()
    nonzero = weights[weights > 0]
    p99 = float(torch.quantile(nonzero[:1_000_000], 0.99)) if nonzero.numel() else 1.0
    return round(target / p99, 3)


@torch.inference_mode()
def reconstruction_stats(sae, acts: torch.Tensor) -> dict:
    """Fraction of variance explained and dead latents on a sample of training states."""
    latents = sae.encode(acts)
    recon = sae.decode(latents)
    fvu = ((acts - recon) ** 2).sum() / ((acts - acts.mean(0)) ** 2).sum()
    alive = (latents > 0).any(dim=0).float().mean()
    return {"explained_variance": round(float(1 - fvu), 4), "alive_fraction_on_sample": round(float(alive), 4)}


def calibrate_saved_sae(folder: str | Path, source: str, model: str = DEFAULT_MODEL, max_texts: int = 500,
                        max_length: int = 256) -> float:
    """Record ``splare_quant_scale`` in a saved SAE's cfg.json metadata (e.g. a public SAE's local copy)."""
    from .activations import collect_activations
    from .sae import load_sae, recorded_layer

    folder = Path(folder)
    sae = load_sae(str(folder))
    layer = recorded_layer(sae)
    if layer is None:
        raise ArtifactError(f"{folder}: the SAE records no layer (metadata hook_name)")
    runner = _BackboneOnly(model, layer, max_length)
    acts = collect_activations(runner, training_texts(source)[:max_texts], max_tokens=20_000)
    scale = calibrate_quant_scale(sae, acts)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.setdefault("metadata", {})["splare_quant_scale"] = scale
    with atomic_write(folder / "cfg.json") as out:
        json.dump(cfg, out)
    return scale


def model_card(r: dict) -> str:
    return f"""# TopK SAE for {r['model']}, layer {r['layer']}

Trained by `python -m splare_pyserini.train_sae` with sae-lens's `SAETrainer` and
`TopKTrainingSAE` (activation norm folded into the weights); loads with
`sae_lens.SAE.load_from_disk`.

- hook: `{r['hook_name']}` (output of block {r['layer']}, i.e. Hugging Face `hidden_states[{r['layer']}]`)
- d_in -> d_sae: {r['d_sae']} latents, k = {r['k']} active per token
- data: hidden states of every non-special token of the texts in `{r['source']}` (documents and queries,
  no relevance labels), at most {r['max_length']} tokens per text: {r['distinct_tokens']:,} token states
- training: {r['steps']} steps x {r['batch_size']} states ({r['training_tokens']:,} samples), lr {r['lr']}
  (cosine to lr/10), seed {r['seed']}
- wall time on CPU ({r['torch_threads']} threads): activations {r['seconds_activations']} s,
  training {r['seconds_training']} s
- quality on 20k training states: explained variance {r['explained_variance']},
  alive latents {r['alive_fraction_on_sample']}
- impact quantization: `splare_quant_scale` = {r['quant_scale']} in the SAE metadata (99th percentile of
  non-zero token weights log(1+z) maps to 100)
- stored in {'fp16' if r['fp16'] else 'fp32'}

This SAE is trained only to reconstruct hidden states; it has not been trained for retrieval.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splare_pyserini.train_sae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="BEIR folder or name, JSONL file, or ir_datasets id")
    parser.add_argument("--output", required=True, help="folder to save the SAE in")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--layer", type=int, default=4, help="hidden_states index (1..num_layers)")
    parser.add_argument("--d-sae", type=int, default=8192)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4096, help="token states per step")
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fp32", action="store_true", help="store fp32 weights (default fp16)")
    parser.add_argument("--calibrate-only", action="store_true",
                        help="only record splare_quant_scale in the existing SAE folder --output")
    args = parser.parse_args(argv)
    if args.calibrate_only:
        print(f"splare_quant_scale = {calibrate_saved_sae(args.output, args.input, args.model)}")
        return
    out = train_sae(args.input, args.output, args.model, args.layer, args.d_sae, args.k, args.steps,
                    args.batch_size, args.lr, args.max_length, args.max_tokens, args.seed, not args.fp32)
    print(f"saved {out}")


if __name__ == "__main__":
    cli_main(main)()
