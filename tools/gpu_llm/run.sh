#!/bin/bash
# Issue 17 on a GPU (see job.py). env: DEVICE, STEPS, TEMPS, DEADLINE, SETS, BEIR_TAR, NEG, KEEP (part 1 of the GGUF)
set -u
L=${L:-.dev/llm}; mkdir -p $OUT/r /tmp/m /tmp/e; KEEP=${KEEP:-/tmp/keep}
export PYTHONPATH=$PWD:${SHIM:-$PWD/.dev/shim} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPLARE_CACHE=${SPLARE_CACHE:-/tmp/sc} SPLARE_BEIR_DIR=/tmp/beir
python -c "import gguf" 2>/dev/null || export PYTHONPATH=$PYTHONPATH:$PWD/.dev/gguf-pkg
echo "$(nvidia-smi -L 2>/dev/null | head -1) $(python -c 'import torch,transformers;print(torch.__version__,transformers.__version__)')" | tee $OUT/summary.txt
if [ ! -f $SPLARE_CACHE/models/smollm2-135m/config.json ]; then
  cat $KEEP/smol15.part1 $L/smol15.part2 > /tmp/smol15.gguf || { echo "no part 1" | tee -a $OUT/summary.txt; exit 3; }
  (cd /tmp && sha256sum -c $OLDPWD/$L/smol15.sha256) >> $OUT/summary.txt || exit 3
  python $L/assemble.py /tmp/smol15.gguf > $OUT/r/assemble.log 2>&1; rc=$?; tail -1 $OUT/r/assemble.log | tee -a $OUT/summary.txt
  [ $rc = 0 ] || exit 4
fi
mkdir -p /tmp/beir && tar xJf ${BEIR_TAR:-$L/beir.tar.xz} -C /tmp/beir
python $L/job.py 2>&1 | grep -v "it/s\]\|s/it\]" > /tmp/job.log; tail -5 /tmp/job.log
cat $OUT/summary.txt; rm -rf $OUT/r $OUT/summary.txt $OUT/dev.jsonl $OUT/final.txt; ls -la $OUT
