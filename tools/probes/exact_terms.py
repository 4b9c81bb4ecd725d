#!/usr/bin/env python
"""Where SPLARE loses to BM25, per query, by what exact word matching has to hold on to (a diagnosis on a test
split: no setting is chosen by it).

    python tools/probes/exact_terms.py <set> <bm25 run> <splare run>

Queries are split by whether they hold a number, a name (a capitalised word after the first), and a rare word
(one that at most 3 of the collection's documents hold); for each group the mean nDCG@10 of both runs, their
difference and the queries won and lost."""
import re
import sys
from collections import Counter

import numpy as np

from splare_pyserini.datasets import load_beir, resolve_beir_folder
from splare_pyserini.lucene.evaluate import per_query_scores

WORD = re.compile(r"\w+")
dataset, bm25, splare = sys.argv[1:4]
data = load_beir(resolve_beir_folder(dataset), split="test", need_qrels=True)
scores = {name: per_query_scores(data.qrels, run, ["nDCG@10"])["nDCG@10"] for name, run in
          (("bm25", bm25), ("splare", splare))}
df = Counter(w for r in data.corpus for w in set(WORD.findall(r.text.lower())))
texts = {r.id: r.text for r in data.queries}
queries = sorted(scores["bm25"])


def groups(text: str) -> dict[str, bool]:
    words = WORD.findall(text)
    return {"a number": any(w.isdigit() or re.search(r"\d", w) for w in words),
            "a name (capitalised word after the first)": any(w[:1].isupper() for w in words[1:]),
            "a rare word (in at most 3 documents)": any(0 < df[w.lower()] <= 3 for w in words)}


flags = {q: groups(texts[q]) for q in queries}
print(f"{dataset}: {len(queries)} judged queries; SPLARE - BM25 {np.mean([scores['splare'][q] - scores['bm25'][q] for q in queries]):+.4f}")
print("| queries holding | with: queries | BM25 | SPLARE | SPLARE - BM25 | won / lost | without: queries | BM25 | SPLARE | SPLARE - BM25 | won / lost |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name in next(iter(flags.values())):
    cells = []
    for has in (True, False):
        qs = [q for q in queries if flags[q][name] == has]
        b = np.array([scores["bm25"][q] for q in qs]) if qs else np.zeros(0)
        s = np.array([scores["splare"][q] for q in qs]) if qs else np.zeros(0)
        d = s - b
        cells += [str(len(qs)), f"{b.mean():.4f}" if qs else "", f"{s.mean():.4f}" if qs else "",
                  f"{d.mean():+.4f}" if qs else "", f"{(d > 0).sum()} / {(d < 0).sum()}"]
    print(f"| {name} | " + " | ".join(cells) + " |")
