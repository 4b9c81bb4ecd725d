"""Issue 12 on one GPU: the default's recipe and the NFCorpus leave-one-out recipe trained at the CPU's scale
and at a larger one, all at once (one process each), scored on NFCorpus dev by exact dot products; the best
default and leave-one-out checkpoints come back. env: DEADLINE (s of training), RUNS (names, default the first
eight), ALSO (more checkpoints to send), NOSEND (scores only)."""
import json, os, subprocess, sys, time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

G = Path(os.environ.get("G", ".dev/gtrain")); OUT = Path(os.environ["OUT"]); t0 = time.time()
DEV = os.environ.get("DEVICE", "cuda"); DEADLINE = float(os.environ.get("DEADLINE", 330))
MODELS = Path(os.environ.get("MODELS", "/tmp/m")); BEIR = Path(os.environ["SPLARE_BEIR_DIR"])


def log(msg):
    line = f"[{time.time() - t0:.0f} s] {msg}"
    print(line, flush=True)
    with open(OUT / "summary.txt", "a") as f:
        f.write(line + "\n")


# the frozen SAE: encoder weights, and decoder rows rebuilt with their norms (all the TopK path reads of W_dec)
SAE = Path("/tmp/sae/minilm-l6-layer6-topk-sae-v3"); SAE.mkdir(parents=True, exist_ok=True)
w = load_file(G / "sae" / "enc.safetensors"); norms = w.pop("norms")
W_dec = torch.zeros(norms.shape[0], w["W_enc"].shape[0], dtype=norms.dtype); W_dec[:, 0] = norms
save_file({**w, "W_dec": W_dec}, SAE / "sae_weights.safetensors")
for f in ("cfg.json", "training.json"):
    (SAE / f).write_text((G / "sae" / f).read_text())

DEFAULT = ["scifact:train=1", "nfcorpus:train=1", "scifact:corpus=0.5", "nfcorpus:corpus=0.5", "cranfield:corpus=0.5", "cacm:corpus=0.5"]
LOO_NF = ["scifact:train=1", "scifact:corpus=0.5", "cranfield:corpus=0.5", "cacm:corpus=0.5"]
S = dict(sae=str(SAE), device=DEV, negatives="bm25")
V = dict(sae="vocab", layer=6, temperature=5.0, device=DEV, negatives="bm25")
ALL = {
    "d-150x16-k16": dict(sources=DEFAULT, steps=150, batch_size=16, token_k=16, **S),
    "d-600x64-k16": dict(sources=DEFAULT, steps=600, batch_size=64, token_k=16, **S),
    "d-600x64": dict(sources=DEFAULT, steps=600, batch_size=64, **S),
    "d-600x64-k8": dict(sources=DEFAULT, steps=600, batch_size=64, token_k=8, **S),
    "l-150x16-k16": dict(sources=LOO_NF, steps=150, batch_size=16, token_k=16, **S),
    "l-600x64-k16": dict(sources=LOO_NF, steps=600, batch_size=64, token_k=16, **S),
    "v-600x64": dict(sources=LOO_NF, steps=600, batch_size=64, **V),
    "d-1500x64-k16": dict(sources=DEFAULT, steps=1500, batch_size=64, token_k=16, **S),
    # the SAE-fit term against the out-of-domain loss of more fine-tuning (a second call)
    "l-600x64-k16-r1": dict(sources=LOO_NF, steps=600, batch_size=64, token_k=16, recon_weight=1.0, **S),
    "l-600x64-k16-r0.3": dict(sources=LOO_NF, steps=600, batch_size=64, token_k=16, recon_weight=0.3, **S),
}
RUNS = os.environ.get("RUNS", " ".join(list(ALL)[:8])).split()
if os.environ.get("SMOKE"):  # a CPU check of the whole job in minutes
    for kw in ALL.values():
        kw.update(steps=2, batch_size=4)
env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 16 // len(RUNS))), "MODELS": str(MODELS)}
procs = {}
for name in RUNS:
    (MODELS / name).mkdir(parents=True, exist_ok=True)
    procs[name] = subprocess.Popen([sys.executable, str(G / "fit.py"), name, json.dumps(ALL[name])], env=env,
                                   stdout=open(MODELS / name / "fit.log", "w"), stderr=subprocess.STDOUT)
log(f"{torch.__version__} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}; training {RUNS}")
while any(p.poll() is None for p in procs.values()) and time.time() - t0 < DEADLINE:
    time.sleep(2)
for name, p in procs.items():
    if p.poll() is None:
        p.kill(); log(f"{name}: killed at the deadline")
    tail = (MODELS / name / "fit.log").read_text().strip().splitlines()[-1:]
    log(f"{name}: rc {p.returncode}: {tail[0][-300:] if tail else ''}")

from splare_pyserini.encode import encode_corpus, encode_queries, load_input  # noqa: E402
from splare_pyserini.model.encoder import SaeSparseEncoder  # noqa: E402

corpus, _, _ = load_input("nfcorpus", "corpus", "test")
if os.environ.get("SMOKE"):
    corpus = corpus[:100]
scores = {}
for name in RUNS:
    ckpt = MODELS / name / "checkpoint"
    if not (ckpt / "splare.json").is_file():
        continue
    try:
        s = time.time(); enc = SaeSparseEncoder(str(ckpt), device=DEV); e = Path(f"/tmp/e/{name}")
        encode_corpus(corpus, e / "corpus", enc, 128, 0, 1, 100_000, source="nfcorpus", show_progress=False)
        for split in ("dev",):
            _, queries, _ = load_input("nfcorpus", "queries", split)
            encode_queries(queries, e / split, enc, source="nfcorpus", show_progress=False)
        row = {"model": name, "seconds_encode": round(time.time() - s, 1)}
        for split in ("dev",):  # test is scored on the CPU side, by Lucene, for the chosen models only
            r = subprocess.run([sys.executable, str(G / "deveval.py"), str(e / "corpus" / "corpus"), str(e / split / "queries.jsonl"),
                                str(BEIR / "nfcorpus/qrels" / f"{split}.tsv")], capture_output=True, text=True)
            row[split] = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else r.stderr[-400:]
        scores[name] = row["dev"]["ndcg@10"] if isinstance(row["dev"], dict) else -1
        with open(OUT / "dev.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        log(f"dev {row}")
        del enc; torch.cuda.empty_cache() if DEV.startswith("cuda") else None
    except Exception as err:
        log(f"eval {name} FAILED: {type(err).__name__}: {err}")
best = {p: max((n for n in scores if n.startswith(p)), key=scores.get, default=None) for p in ("d-", "l-")}
log(f"best on NFCorpus dev: {best}")
if os.environ.get("NOSEND"):  # scores only
    sys.exit(0)
send = [n for n in best.values() if n] + [n for n in os.environ.get("ALSO", "").split() if n in scores]
logs = " ".join(f"{n}/checkpoint/splare.json {n}/checkpoint/training_log.jsonl {n}/fit.log" for n in RUNS
                if (MODELS / n / "checkpoint").is_dir())
cmd = (f"tar cf - --exclude=checkpoint/sae -C {MODELS} {logs} " + " ".join(f"{n}/checkpoint" for n in dict.fromkeys(send))
       + f" | xz -T0 -3 | split -b 15500000 - {OUT}/models.tar.xz.part-")
subprocess.run(["bash", "-c", cmd], check=True)
log("sent " + " ".join(dict.fromkeys(send)) + ": " + " ".join(f"{p.name} {p.stat().st_size}" for p in sorted(OUT.glob("models.tar.xz.part-*"))))
