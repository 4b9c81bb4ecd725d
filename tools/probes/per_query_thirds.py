"""Where leave-one-out SPLARE and its twin differ, per query (a diagnosis on a test split: no setting is chosen by it).

    python tools/probes/per_query_thirds.py <set> <bm25 run> <splare run> <twin run>

Queries in thirds by BM25's nDCG@10 (how far exact word matching gets) and by length; mean nDCG@10 of each system
and SPLARE - twin in each third; and the Spearman correlation of SPLARE - twin with BM25's score."""
import sys

import numpy as np
from scipy.stats import spearmanr

from splare_pyserini.datasets import load_beir, resolve_beir_folder
from splare_pyserini.lucene.evaluate import per_query_scores

dataset, bm25, splare, twin = sys.argv[1:5]
data = load_beir(resolve_beir_folder(dataset), split="test", need_qrels=True)
qrels = data.qrels
s = {name: per_query_scores(qrels, run, ["nDCG@10"])["nDCG@10"] for name, run in
     (("bm25", bm25), ("splare", splare), ("twin", twin))}
qs = sorted(s["bm25"])
v = {k: np.array([s[k][q] for q in qs]) for k in s}
d = v["splare"] - v["twin"]
texts = {r.id: r.text for r in data.queries}
length = np.array([len(texts[q].split()) for q in qs])
print(f"{dataset}: {len(qs)} judged queries; SPLARE - twin {d.mean():+.4f}; Spearman(SPLARE - twin, BM25) "
      f"{spearmanr(d, v['bm25']).correlation:+.3f}, (SPLARE - twin, words) {spearmanr(d, length).correlation:+.3f}")
for label, key in (("BM25 nDCG@10", v["bm25"]), ("query words", length)):
    order = np.argsort(key, kind="stable")
    print(f"| third by {label} | queries | {label} range | BM25 | twin | SPLARE | SPLARE - twin |")
    print("|---|---|---|---|---|---|---|")
    for i, part in enumerate(np.array_split(order, 3)):
        print(f"| {('low', 'middle', 'high')[i]} | {len(part)} | {key[part].min():.3g}-{key[part].max():.3g} | "
              f"{v['bm25'][part].mean():.4f} | {v['twin'][part].mean():.4f} | {v['splare'][part].mean():.4f} | "
              f"{d[part].mean():+.4f} |")
