"""Device side: the cut GGUF -> $SPLARE_CACHE/models/smollm2-135m through the package's own converter,
the CPU cache's tokenizer files, and a check that every tensor equals the CPU cache's (sha256)."""
import hashlib, json, shutil, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import load_file
from splare_pyserini.model.fetch import GGUF_MODELS, cache_root, convert_gguf

gguf, here = Path(sys.argv[1]), Path(__file__).parent
dest = cache_root() / "models" / "smollm2-135m"
dest.mkdir(parents=True, exist_ok=True)
convert_gguf(gguf, dest, "smollm2-135m", GGUF_MODELS["smollm2-135m"])
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    shutil.copy(here / name, dest / name)
state = load_file(dest / "model.safetensors")
want = json.load(open(here / "digests.json"))
got = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in state.items()}
bad = [k for k in want if got.get(k) != want[k]]
extra = sorted(set(got) - set(want))
print(f"tensors checked: {len(want)}; differing: {len(bad)} {bad[:3]}; extra: {extra[:3]}")
sys.exit(1 if bad or extra else 0)
