#!/bin/bash
# On the GPU machine: unpack the four sets, put the stand-ins and the fp16 MiniLM on the path, run driver.py.
set -u
D=.dev/sae-gpu  # built by tools/gpu_sae/build_payload.sh
mkdir -p /tmp/beir && tar xJf $D/beir.tar.xz -C /tmp/beir
export PYTHONPATH=$PWD:$PWD/$D/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPLARE_BEIR_DIR=/tmp/beir TQDM_MININTERVAL=30
python $D/driver.py 2>&1 | grep -v "it/s\]\|s/it\]"
ls -la $OUT
