#!/bin/bash
# Build .dev/gtrain (beside .dev/sae-gpu from tools/gpu_sae/build_payload.sh): the job's scripts, the frozen SAE
# without its decoder matrix (only the rows' norms, all the TopK path reads of it: the upload limit), and the BM25
# negatives of every training pair, mined here with Java. Run from the repository root, in the project's venv.
set -eu
D=.dev/gtrain; mkdir -p $D/sae runs/gtrain
cp tools/gpu_train/{fit.py,job.py,run.sh} tools/gpu_llm/deveval.py $D/
python - <<'PY'
import shutil
from safetensors.torch import load_file, save_file
src = "splare_pyserini/resources/models/minilm-l6-layer6-topk-sae-v3"
w = load_file(f"{src}/sae_weights.safetensors")
save_file({"W_enc": w["W_enc"], "b_enc": w["b_enc"], "b_dec": w["b_dec"], "norms": w["W_dec"].norm(dim=-1)},
          ".dev/gtrain/sae/enc.safetensors")
for f in ("cfg.json", "training.json"):
    shutil.copy(f"{src}/{f}", ".dev/gtrain/sae/")
PY
HF_HUB_OFFLINE=1 python tools/gpu_train/mine.py runs/gtrain/neg
(cd runs/gtrain/neg && tar cf - *.jsonl | xz -T2 -6 > $OLDPWD/$D/neg.tar.xz)
du -sh $D
