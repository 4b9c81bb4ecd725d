"""Here (Java): BM25 negatives of every pair of the GPU job's configs, one JSONL per corpus folder name."""
import json, sys
from collections import defaultdict
from pathlib import Path
from splare_pyserini.training.trainer import TrainConfig, load_sources
from splare_pyserini.generalize import loo_sources

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
ALL = ("scifact", "nfcorpus", "cranfield", "cacm")
DEFAULT = ("scifact:train=1", "nfcorpus:train=1", "scifact:corpus=0.5", "nfcorpus:corpus=0.5", "cranfield:corpus=0.5", "cacm:corpus=0.5")
configs = [DEFAULT] + [loo_sources(h, ALL, 1.0, 0.5) for h in ALL]
neg = defaultdict(dict)
for sources in configs:
    print(sources, flush=True)
    cfg = TrainConfig(sources=sources, output=str(out / "work"), sae="vocab")
    for src in load_sources(cfg):
        for p in src.pairs:
            neg[src.spec.dataset][" ".join(p.query.split())] = p.negatives
for name, m in neg.items():
    with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for q, ids in m.items():
            f.write(json.dumps({"query": q, "negatives": ids}, ensure_ascii=False) + "\n")
    print(name, len(m), flush=True)
