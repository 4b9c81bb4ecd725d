"""SAE training speed: sae-lens's TopK step against the sparse step ``train_sae`` uses, side by side.

Both SAEs start from the same weights and are driven by sae-lens's own ``SAETrainer`` over the same
batches of token states, in one process, alternating rounds so that a noisy machine slows both alike;
the final weights are compared too (the steps are equal to float rounding):

    python -m splare_pyserini.bench.sae_training --d-sae 8192 --steps 10 --threads 2
    python -m splare_pyserini.bench.sae_training --states runs/states.pt --d-sae 32768

States are standard normal unless ``--states`` names a saved (tokens x d_in) tensor; the cost of a step
depends on the shapes (and on how many latents are dead, for the auxiliary loss), not on the values.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from ..config import check_fields, option, parse_config, require
from ..errors import InputError, cli_main
from ..io import markdown_table, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaeTrainingBenchConfig:
    d_in: int = option(384, "state width (MiniLM's 384) when --states is not given")
    d_sae: int = option(8192, "latents")
    k: int = option(32, "latents active per state")
    batch_size: int = option(4096, "states per step")
    steps: int = option(10, "training steps per round")
    rounds: int = option(2, "alternating rounds (best round per implementation is reported)")
    dead_window: int = option(2, "sae-lens's dead_feature_window: latents silent this many steps are dead and "
                                 "join the auxiliary loss")
    states: str | None = option(None, "a torch-saved (tokens x d_in) tensor of states (default: random)")
    threads: int | None = option(None, "torch threads (default: torch's, all cores)")
    output: str | None = option(None, "write sae_training.json here (default: print only)")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("d_in", "d_sae", "k", "batch_size", "steps", "rounds", "dead_window"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        require(self.k <= self.d_sae, f"k: {self.k} is more than d_sae {self.d_sae}")
        require(self.threads is None or self.threads >= 1, f"threads: must be >= 1, got {self.threads}")


def _trainer(sae, states, cfg: SaeTrainingBenchConfig):
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from ..training.activations import ShuffledBatches

    trainer_cfg = SAETrainerConfig(
        total_training_samples=cfg.steps * cfg.batch_size, train_batch_size_samples=cfg.batch_size, lr=4e-4,
        lr_end=4e-5, lr_scheduler_name="cosineannealing", lr_warm_up_steps=1, device="cpu",
        dead_feature_window=cfg.dead_window, feature_sampling_window=max(1, cfg.steps), n_batches_for_norm_estimate=2,
        logger=LoggingConfig(log_to_wandb=False))
    return SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=ShuffledBatches(states, cfg.batch_size, seed=0))


def _load_states(path: str, batch_size: int):
    """The ``--states`` tensor, or a one-line error naming the file: torch's own errors are pages long."""
    import torch

    try:
        states = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (--states)") from None
    except Exception as err:  # pickle, zip and torch errors alike
        raise InputError(f"{path}: not a torch-saved tensor ({type(err).__name__}) (--states)") from None
    if not isinstance(states, torch.Tensor) or states.dim() != 2 or states.shape[0] < batch_size:
        shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise InputError(f"{path}: expected a (tokens x d_in) tensor of at least --batch-size {batch_size} rows, "
                         f"got {shape} (--states)")
    return states.float()


def bench_sae_training(cfg: SaeTrainingBenchConfig) -> dict:
    """Seconds per step of each implementation (best round), their ratio, and the largest weight difference."""
    import torch
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    from ..training.sae_step import SparseStepTopKTrainingSAE

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    states = (_load_states(cfg.states, cfg.batch_size) if cfg.states
              else torch.randn(max(20 * cfg.batch_size, 100_000), cfg.d_in, generator=torch.Generator().manual_seed(0)))
    d_in = states.shape[1]

    def fresh(cls):
        torch.manual_seed(0)
        return cls(TopKTrainingSAEConfig(d_in=d_in, d_sae=cfg.d_sae, k=cfg.k,
                                         normalize_activations="expected_average_only_in"))

    best = {"sae-lens": float("inf"), "sparse step": float("inf")}
    weights = {}
    for _ in range(cfg.rounds):
        for name, cls in (("sae-lens", TopKTrainingSAE), ("sparse step", SparseStepTopKTrainingSAE)):
            trainer = _trainer(fresh(cls), states, cfg)
            start = time.perf_counter()
            weights[name] = trainer.fit().state_dict()
            best[name] = min(best[name], (time.perf_counter() - start) / cfg.steps)
    difference = max(float((weights["sae-lens"][p] - weights["sparse step"][p]).abs().max()) for p in weights["sae-lens"])
    return {"config": asdict(cfg), "d_in": d_in, "threads": torch.get_num_threads(),
            "seconds per step": {name: round(s, 4) for name, s in best.items()},
            "speed-up": round(best["sae-lens"] / best["sparse step"], 2), "largest weight difference": difference}


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(SaeTrainingBenchConfig, argv, "python -m splare_pyserini.bench.sae_training", __doc__)
    result = bench_sae_training(cfg)
    print(markdown_table(["implementation", "s / step", "speed-up"],
                         [[name, s, round(result["seconds per step"]["sae-lens"] / s, 2)]
                          for name, s in result["seconds per step"].items()]))
    print(f"{cfg.d_sae} latents, k = {cfg.k}, {cfg.batch_size} states per step, {result['threads']} threads; "
          f"largest weight difference after {cfg.steps} steps: {result['largest weight difference']:.2e}")
    if cfg.output:
        write_json(f"{cfg.output}/sae_training.json", result)


cli = cli_main(main)

if __name__ == "__main__":
    cli()
