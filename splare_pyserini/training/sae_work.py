"""The work folder of an SAE in training, so that a killed ``train_sae`` resumes where it stopped.

An SAE trained to convergence on a CPU is an hour's job, longer than some sessions have. Next to the
output, ``<output>.partial/`` holds the recipe, the collected token states (``states.pt``, so a rerun
does not run the backbone again) and the latest of sae-lens's own trainer checkpoints (SAE weights,
optimizer, schedule, dead-latent counters, activation scale). A rerun of the same recipe loads them and
replays the batch order from the checkpoint on, so it ends with the weights an uninterrupted run would
have (tested); a changed recipe starts over. The folder is removed once the SAE is saved.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from ..io import atomic_write

log = logging.getLogger(__name__)
CHECKPOINT_STEPS = 250  # steps between checkpoints (a checkpoint of 8,192 latents is ~25 MB, written in < 1 s)
DONE = "done.json"


class SaeWork:
    """``<output>.partial``: the recipe it belongs to, the token states, the latest complete checkpoint."""

    def __init__(self, output: str | Path, recipe: dict):
        self.folder = Path(f"{output}.partial")
        recorded = self.folder / "recipe.json"
        if self.folder.exists() and (not recorded.is_file() or json.loads(recorded.read_text()) != recipe):
            log.info("%s holds another recipe's work: starting over", self.folder)
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not recorded.is_file():
            with atomic_write(recorded) as out:
                out.write(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
        self.checkpoints = self.folder / "checkpoints"

    def states(self, collect: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
        """The token states and the seconds their collection took: collected once, then read back."""
        path, timing = self.folder / "states.pt", self.folder / "states.json"
        if path.is_file() and timing.is_file():
            log.info("token states from %s", path)
            return torch.load(path), json.loads(timing.read_text())["seconds"]
        started = time.time()
        states = collect()
        seconds = round(time.time() - started, 1)
        with atomic_write(path, "wb") as out:
            torch.save(states, out)
        with atomic_write(timing) as out:
            out.write(json.dumps({"seconds": seconds}) + "\n")
        return states, seconds

    def latest(self) -> tuple[Path, dict] | None:
        """The newest complete checkpoint (one whose ``done.json`` was written after its files) and its record."""
        done = [(json.loads(p.read_text()), p.parent) for p in self.checkpoints.glob(f"**/{DONE}")]
        if not done:
            return None
        record, folder = max(done, key=lambda d: d[0]["training_samples"])
        return folder, record

    def checkpointed(self, trainer, seconds_before: float) -> Callable[..., None]:
        """sae-lens's ``save_checkpoint_fn``: marks the checkpoint complete (with the training seconds so far,
        ``seconds_before`` from earlier runs included) and drops the older ones."""
        started = time.time()

        def mark(checkpoint_path: Path | None = None) -> None:
            if checkpoint_path is None:
                return
            record = {"training_samples": trainer.n_training_samples,
                      "seconds_training": round(seconds_before + time.time() - started, 1)}
            with atomic_write(Path(checkpoint_path) / DONE) as out:
                out.write(json.dumps(record) + "\n")
            for old in list(self.checkpoints.glob(f"**/{DONE}")):
                if old.parent != Path(checkpoint_path):
                    shutil.rmtree(old.parent, ignore_errors=True)

        return mark

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def resume(trainer, checkpoint: Path, data_provider, estimated_batches: int) -> None:
    """Load a checkpoint into a fresh ``trainer`` and move ``data_provider`` past the batches already used
    (``estimated_batches`` of them by the activation-scale estimate before the first step)."""
    from safetensors.torch import load_file

    trainer.sae.load_state_dict(load_file(checkpoint / "sae_weights.safetensors"))
    trainer.load_trainer_state(checkpoint)
    batch = trainer.cfg.train_batch_size_samples
    # sae-lens checkpoints inside a step, before counting it: the step count is the samples' count
    trainer.n_training_steps = trainer.n_training_samples // batch
    trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples]
    data_provider.skip(estimated_batches + trainer.n_training_steps)
    log.info("resumed from %s at step %d", checkpoint, trainer.n_training_steps)
