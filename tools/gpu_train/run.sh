#!/bin/bash
# On the GPU machine: unpack the sets and negatives, put sae-lens's trainer-less cut and MiniLM on the path, run job.py.
set -u
mkdir -p /tmp/beir /tmp/neg && tar xJf .dev/sae-gpu/beir.tar.xz -C /tmp/beir && tar xJf .dev/gtrain/neg.tar.xz -C /tmp/neg
export PYTHONPATH=$PWD:$PWD/.dev/sae-gpu/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPLARE_BEIR_DIR=/tmp/beir NEG=/tmp/neg TQDM_DISABLE=1
python .dev/gtrain/job.py 2>&1
ls -la $OUT
