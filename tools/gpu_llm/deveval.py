"""nDCG@10 (trec_eval's ndcg_cut_10: gain = relevance) of encoded queries against an encoded corpus by
exact sparse dot products, for choosing settings on a dev split on a machine without Lucene."""
import glob, json, math, sys
import torch

corpus_dir, queries_file, qrels_file = sys.argv[1:4]
device = "cuda" if torch.cuda.is_available() else "cpu"
terms: dict[str, int] = {}


def load(files):
    ids, rows, cols, vals = [], [], [], []
    for f in files:
        for line in open(f, encoding="utf-8"):
            o = json.loads(line)
            for t, v in o["vector"].items():
                rows.append(len(ids)); cols.append(terms.setdefault(t, len(terms))); vals.append(float(v))
            ids.append(str(o["id"]))
    return ids, rows, cols, vals


def dense(part, n):
    ids, rows, cols, vals = part
    m = torch.zeros(len(ids), n, device=device)
    m[torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(cols, dtype=torch.long, device=device)] = \
        torch.tensor(vals, device=device)
    return m


docs = load(sorted(glob.glob(corpus_dir + "/*.jsonl")))
queries = load([queries_file])
qrels: dict[str, dict[str, int]] = {}
for i, line in enumerate(open(qrels_file, encoding="utf-8")):
    q, d, r = line.rstrip("\n").split("\t")[:3]
    if i == 0 and not r.lstrip("-").isdigit():
        continue
    qrels.setdefault(q, {})[d] = int(r)
n = len(terms)
D, Q = dense(docs, n), dense(queries, n)
top = (Q @ D.T).topk(10, dim=1).indices.tolist()
scores = []
for qi, qid in enumerate(queries[0]):
    rel = qrels.get(qid)
    if not rel or max(rel.values()) <= 0:
        continue
    dcg = sum(rel.get(docs[0][d], 0) / math.log2(r + 2) for r, d in enumerate(top[qi]) if rel.get(docs[0][d], 0) > 0)
    ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:10]
    scores.append(dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal)))
nnz_d = len(docs[1]) / max(len(docs[0]), 1)
nnz_q = len(queries[1]) / max(len(queries[0]), 1)
print(json.dumps({"ndcg@10": round(sum(scores) / len(scores), 4), "queries": len(scores), "docs": len(docs[0]),
                  "nnz_d": round(nnz_d, 1), "nnz_q": round(nnz_q, 1)}))
