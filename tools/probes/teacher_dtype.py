"""The dense teacher in float32 against bfloat16 autocast: time (alternated, same texts) and agreement.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python tools/probes/teacher_dtype.py [--dataset nfcorpus] [--teacher all-mpnet-base-v2]

A batch as the trainer's teacher sees it (32 documents, 16 queries of a shipped set); prints seconds per
repeat for each dtype, the smallest document cosine between the two, the largest score difference, the KL
between the two teachers' softmax distributions at the distillation temperature, and top-1 agreement."""
import argparse
import random
import time

import torch

from splare_pyserini.datasets import load_beir, resolve_beir_folder
from splare_pyserini.model.artifacts import MPNET
from splare_pyserini.model.dense import DenseEncoder

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", default="nfcorpus")
parser.add_argument("--teacher", default=MPNET)
parser.add_argument("--temperature", type=float, default=0.05)
parser.add_argument("--repeats", type=int, default=2)
args = parser.parse_args()

data = load_beir(resolve_beir_folder(args.dataset), split="train")
rng = random.Random(1)
documents = [d.text for d in rng.sample(data.corpus, 32)]
queries = [q.text for q in rng.sample(data.queries, 16)]
encoders = {dtype: DenseEncoder(args.teacher, dtype=dtype) for dtype in ("float32", "bfloat16")}
seconds = {dtype: [] for dtype in encoders}
out = {}
for _ in range(args.repeats):
    for dtype, encoder in encoders.items():
        start = time.perf_counter()
        out[dtype] = encoder.encode(documents), encoder.encode(queries)
        seconds[dtype].append(round(time.perf_counter() - start, 2))
(d32, q32), (d16, q16) = out["float32"], out["bfloat16"]
s32, s16 = q32 @ d32.T, q16 @ d16.T
p, q = torch.softmax(s32 / args.temperature, 1), torch.softmax(s16 / args.temperature, 1)
print("seconds:", seconds, f"bfloat16 / float32 (best): {min(seconds['bfloat16']) / min(seconds['float32']):.3f}")
print(f"document cosine min {(d32 * d16).sum(1).min():.6f}; score max |diff| {(s32 - s16).abs().max():.2e}; "
      f"KL {(p * (p.log() - q.log())).sum(1).mean():.2e}; top-1 agreement {(s32.argmax(1) == s16.argmax(1)).float().mean():.3f}")
