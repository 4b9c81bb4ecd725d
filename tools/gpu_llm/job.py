"""Issue 17 on one GPU, in one process (imports and CUDA start once): SmolLM2-135M SPLARE (LoRA through a
frozen TopK SAE at layer 15), its vocabulary twin, the temperature of each chosen on NFCorpus dev, then
bidirectional attention at the chosen temperature; the final models encode the four sets' test splits."""
import json, os, subprocess, sys, time
from pathlib import Path

import torch

from splare_pyserini.encode import encode_corpus, encode_queries, load_input
from splare_pyserini.model.encoder import SaeSparseEncoder
from splare_pyserini.training.trainer import TrainConfig, train

OUT = Path(os.environ["OUT"]); R = OUT / "r"; R.mkdir(parents=True, exist_ok=True)
DEV = os.environ.get("DEVICE", "cuda"); STEPS = int(os.environ.get("STEPS", 150))
TEMPS = {"sae": os.environ.get("TEMPS_SAE", "10 40").split(), "vocab": os.environ.get("TEMPS_VOCAB", "40 160").split()}; TEMPS["vocab"] = TEMPS["vocab"] or []; DEADLINE = float(os.environ.get("DEADLINE", 330))
SETS = os.environ.get("SETS", "scifact nfcorpus cranfield cacm").split()
L = os.environ.get("L", ".dev/llm"); t0 = time.time()
COMMON = dict(sources=("scifact:train", "nfcorpus:train"), model="smollm2-135m", lora_rank=64,
              negatives=os.environ.get("NEG", f"{L}/negatives.jsonl"), steps=STEPS, batch_size=int(os.environ.get("BATCH", 16)), topk=400,
              query_topk=40, device=DEV, save_every=10_000)


def log(msg):
    line = f"[{time.time() - t0:.0f} s] {msg}"
    print(line, flush=True)
    with open(OUT / "summary.txt", "a") as f:
        f.write(line + "\n")


def sync():
    if DEV.startswith("cuda"):
        torch.cuda.synchronize()


def fit(name, **kw):
    s = time.time()
    ckpt = train(TrainConfig(output=f"/tmp/m/{name}", **COMMON, **kw))
    info = json.loads((ckpt / "splare.json").read_text())
    log(f"train {name}: {time.time() - s:.0f} s ({info.get('train_seconds_this_run')} s in steps); final {info.get('final')}")
    if DEV.startswith("cuda"):
        torch.cuda.empty_cache()
    return ckpt


def encoder(name):
    if name == "untrained":  # the base model through the same SAE, with the trained models' pruning
        return SaeSparseEncoder("smollm2-135m", sae=f"{L}/sae", topk=400, query_topk=40, device=DEV)
    return SaeSparseEncoder(f"/tmp/m/{name}/checkpoint", device=DEV)


def encode(name, items):
    enc = encoder(name)
    for dataset, what in items:
        out = Path(f"/tmp/e/{name}/{dataset}-{what}")
        if (out / "encode_info.json").is_file() and what != "corpus" or (out / "corpus").is_dir() and what == "corpus":
            continue
        s = time.time()
        corpus, queries, _ = load_input(dataset, "corpus" if what == "corpus" else "queries",
                                        "test" if what == "corpus" else what)
        if what == "corpus":
            encode_corpus(corpus, out, enc, 64, 0, 1, 1000, source=dataset, show_progress=False)
        else:
            encode_queries(queries, out, enc, source=dataset, show_progress=False)
        sync()
        n = len(corpus) if what == "corpus" else len(queries)
        log(f"encode {name} {dataset} {what}: {n} texts in {time.time() - s:.1f} s")
    del enc


def pack(name, checkpoint):
    """This model's vectors (document texts dropped: the CPU side has them), and its checkpoint if asked,
    as xz parts under $OUT; done per model so that a run cut short still returns the finished ones."""
    import glob
    for f in glob.glob(f"/tmp/e/{name}/*/corpus/*.jsonl"):
        lines = [json.loads(l) for l in open(f, encoding="utf-8")]
        with open(f, "w", encoding="utf-8") as out:
            out.writelines(json.dumps({**o, "contents": ""}, ensure_ascii=False) + "\n" for o in lines)
    s = time.time()
    cmd = f"tar cf - --exclude=state --exclude=cache -C /tmp/e {name}" + (f" -C /tmp/m {name}/checkpoint" if checkpoint else "") \
        + f" -C {OUT} summary.txt dev.jsonl | xz -T0 -6 | split -b 15500000 - {OUT}/{name}.tar.xz.part-"
    subprocess.run(["bash", "-c", cmd], check=True)
    log(f"packed {name} in {time.time() - s:.0f} s: " + " ".join(f"{p.name} {p.stat().st_size}" for p in sorted(OUT.glob(f"{name}.tar.xz.part-*"))))


def dev(name):
    encode(name, [("nfcorpus", "corpus"), ("nfcorpus", "dev")])
    e = f"/tmp/e/{name}"
    r = subprocess.run([sys.executable, f"{L}/deveval.py", f"{e}/nfcorpus-corpus/corpus", f"{e}/nfcorpus-dev/queries.jsonl",
                        os.environ.get("SPLARE_BEIR_DIR", "/tmp/beir") + "/nfcorpus/qrels/dev.tsv"],
                       capture_output=True, text=True)
    row = {"model": name, "dev": json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else r.stderr[-500:]}
    with open(OUT / "dev.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    log(f"dev {name}: {row['dev']}")
    return row["dev"]["ndcg@10"] if isinstance(row["dev"], dict) else -1


scores = {}
if os.environ.get("UNTRAINED"):
    scores["sae-untrained"] = dev("untrained")
for i in range(max(len(v) for v in TEMPS.values())):
    for kind, kw in (("sae", dict(sae=f"{L}/sae")), ("vocab", dict(sae="vocab", layer=15))):
        if i >= len(TEMPS[kind]):
            continue
        t = TEMPS[kind][i]
        name = f"{kind}-t{t}"
        if time.time() - t0 > DEADLINE and any(k.startswith(kind) for k in scores):
            log(f"skip {name}: past the deadline")
            continue
        try:
            fit(name, temperature=float(t), **kw)
            scores[name] = dev(name)
        except Exception as err:  # one failed point must not lose the others
            log(f"{name} FAILED: {type(err).__name__}: {err}")
if not any(k.startswith("sae") for k in scores):
    log("no SAE point finished"); sys.exit(2)
best_sae = max((k for k in scores if k.startswith("sae")), key=scores.get).replace("sae-untrained", "untrained")
best_vocab = max((k for k in scores if k.startswith("vocab")), key=scores.get, default=None)
log(f"chosen on NFCorpus dev: {best_sae}, {best_vocab}")
final = [n for n in (best_sae, best_vocab) if n]
items = [(d, "corpus") for d in SETS] + [(d, "test") for d in SETS]
for name in final:
    encode(name, items)
    pack(name, checkpoint=name.startswith("sae"))
if os.environ.get("NO_BIDIR"):
    log("done: " + " ".join(final)); sys.exit(0)
bidir = "bidir-" + best_sae.split("-", 1)[1]
if time.time() - t0 < DEADLINE + 60:
    try:
        fit(bidir, sae=f"{L}/sae", temperature=float(best_sae.split("-t")[1]), attention="bidirectional")
        scores[bidir] = dev(bidir)
        encode(bidir, items)
        final.append(bidir)
        pack(bidir, checkpoint=False)
    except Exception as err:
        log(f"{bidir} FAILED: {type(err).__name__}: {err}")
else:
    log(f"skip {bidir}: past the deadline")
(OUT / "final.txt").write_text(" ".join(final) + "\n")
log("done: " + " ".join(final))
