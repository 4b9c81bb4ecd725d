"""One training on the GPU machine: the package's own trainer, BM25 negatives read from files mined on the
CPU side (this machine has no Java), per corpus. argv: name, JSON of TrainConfig fields."""
import json, os, sys, time
from pathlib import Path

import splare_pyserini.training.sources as sources
from splare_pyserini.training.negatives import FileNegatives

NEG, _files = os.environ["NEG"], {}


def file_negatives(spec, folder, cache, depth):  # what --negatives bm25 mined here, read back
    name = Path(folder).name
    if name not in _files:
        _files[name] = FileNegatives(f"{NEG}/{name}.jsonl")
    return _files[name]


sources.negative_source = file_negatives
from splare_pyserini.training.trainer import TrainConfig, train  # noqa: E402

name, fields = sys.argv[1], json.loads(sys.argv[2])
t = time.time()
ckpt = train(TrainConfig(output=f"{os.environ.get('MODELS', '/tmp/m')}/{name}", save_every=100_000, **fields))
info = json.loads((ckpt / "splare.json").read_text())
print(json.dumps({"name": name, "seconds": round(time.time() - t, 1), "final": info.get("final")}), flush=True)
