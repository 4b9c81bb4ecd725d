"""Issue 12 on a GPU: TopK SAEs on MiniLM layer-6 states trained far past what the CPU allows, by the
project's own train_sae (real sae-lens code, its heavy unused imports stubbed). env: DEVICE, RUNS
("name:sources:d_sae:steps" separated by spaces), RETURN (names packed into $OUT), KEEP, DEADLINE."""
import json
import os
import subprocess
import time
from pathlib import Path

import torch

from splare_pyserini.training.sae import TrainSaeConfig, collect_source_activations, train_sae
from splare_pyserini.model.backbone import load_backbone

t0 = time.time()
OUT = Path(os.environ["OUT"]); KEEP = Path(os.environ.get("KEEP", "/tmp/keep")); KEEP.mkdir(parents=True, exist_ok=True)
DEV = os.environ.get("DEVICE", "cuda"); DEADLINE = float(os.environ.get("DEADLINE", 420))
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", 2_000_000))
RUNS = [r.split(":") for r in os.environ["RUNS"].split()]
RETURN = os.environ.get("RETURN", "").split()


def log(msg):
    line = f"[{time.time() - t0:.0f} s] {msg}"
    print(line, flush=True)
    with open(OUT / "summary.txt", "a") as f:
        f.write(line + "\n")


log(f"{torch.__version__} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda'}")
acts_by_sources = {}
for name, sources, d_sae, steps in RUNS:
    if time.time() - t0 > DEADLINE:
        log(f"skip {name}: past the deadline"); continue
    if (KEEP / name / "training.json").is_file():
        log(f"{name}: already in {KEEP}"); continue
    srcs = tuple(sources.split(","))
    cfg = TrainSaeConfig(input=srcs, output=str(KEEP / name), d_sae=int(d_sae), steps=int(steps), device=DEV,
                         max_tokens=MAX_TOKENS)
    if srcs not in acts_by_sources:
        s = time.time()
        tok, bb = load_backbone(cfg.model, cfg.layer, device=DEV)
        acts_by_sources[srcs] = collect_source_activations(tok, bb, srcs, cfg.max_length, cfg.max_tokens)
        del bb
        log(f"activations {sources}: {tuple(acts_by_sources[srcs].shape)} in {time.time() - s:.0f} s")
    s = time.time()
    try:
        train_sae(cfg, activations=acts_by_sources[srcs])
    except Exception as err:  # one failed SAE must not lose the others
        log(f"{name} FAILED: {type(err).__name__}: {err}"); continue
    rec = json.loads((KEEP / name / "training.json").read_text())
    log(f"{name}: {time.time() - s:.0f} s, EV {rec['explained_variance']}, alive {rec['alive_fraction_on_sample']}, "
        f"states {rec['distinct_tokens']}, device {rec.get('device')}")
    if DEV.startswith("cuda"):
        torch.cuda.empty_cache()

names = [n for n in RETURN if (KEEP / n / "training.json").is_file()]
if names:
    s = time.time()
    subprocess.run(["bash", "-c", f"tar cf - -C {KEEP} {' '.join(names)} | split -b 15000000 - {OUT}/saes.tar.part-"],
                   check=True)
    log(f"packed {names} in {time.time() - s:.0f} s: " + " ".join(f"{p.name} {p.stat().st_size}" for p in sorted(OUT.glob("saes.tar.part-*"))))
log("done")
