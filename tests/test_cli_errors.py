"""Every CLI turns a user error into one line on stderr and exit code 2, never a traceback."""
import subprocess
import sys

import pytest


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"splare_pyserini.{module}", *args], capture_output=True, text=True)


@pytest.mark.parametrize("module,args,message", [
    ("index", ["--input", "{tmp}/nope", "--index", "{tmp}/idx"], "--input {tmp}/nope: no such folder of encoded vectors"),
    ("search", ["--index", "{tmp}/nope", "--topics", "{tmp}/t.tsv", "--output", "{tmp}/r.trec", "--bm25"],
     "--index {tmp}/nope: no such index folder"),
    ("evaluate", ["--qrels", "scifact", "--run", "{tmp}/missing.trec"], "--run {tmp}/missing.trec: no such run file"),
    ("beir", ["--dataset", "{tmp}", "--output", "{tmp}/out"], "{tmp}: not a BEIR folder (no corpus.jsonl)"),
    # bad values are refused by the config before any model loads
    ("encode", ["--input", "scifact", "--output", "{tmp}/o", "--pooling", "mean"],
     "pooling: 'mean' is not one of max, sum"),
    ("beir", ["--output", "{tmp}/o", "--max-length", "0"], "max_length: must be >= 1, got 0"),
    ("encode", ["--input", "scifact", "--output", "{tmp}/o", "--nope"],
     "unrecognized arguments: --nope (see python -m splare_pyserini.encode --help)"),
    ("train_sae", ["--input", "scifact", "--output", "{tmp}/o", "--architecture", "bogus"],
     "architecture: 'bogus' is not one of topk, jumprelu"),
    ("search", ["--index", "{tmp}/i", "--topics", "{tmp}/t.tsv", "--output", "{tmp}/o", "--hits", "0"],
     "hits: must be >= 1, got 0"),
    ("models", ["bogus"], "action: 'bogus' is not one of list, fetch"),
    ("adapt", ["--input", "scifact", "--output", "{tmp}/o", "--model", "smollm2-135m", "--mask-prob", "1.5"],
     "mask_prob: must be in (0, 1), got 1.5"),
    ("encode", ["--input", "scifact", "--output", "{tmp}/o", "--device", "cdua"],
     "device: 'cdua' is not a torch device (e.g. cpu, cuda, cuda:1, mps)"),
    ("train", ["--output", "{tmp}/o", "--device", "gpu0"], "device: 'gpu0' is not a torch device (e.g. cpu, cuda, "
                                                             "cuda:1, mps)"),
    ("pyserini", [], "name a Pyserini module to run, e.g. python -m splare_pyserini.pyserini search.lucene --index ... "
                     "(see python -m splare_pyserini.pyserini --help)"),
])
def test_cli_user_errors(tmp_path, module, args, message):
    proc = run_cli(module, *[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: " + message.format(tmp=tmp_path)]
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("module,args", [
    ("encode", ["--input", "scifact", "--output", "{tmp}/o"]),
    ("search", ["--index", "{tmp}/i", "--topics", "{tmp}/t.tsv", "--output", "{tmp}/o"]),
    ("bench.profile", ["--output", "{tmp}/o"]),
])
def test_a_gpu_this_machine_lacks_is_one_line_before_anything_runs(tmp_path, module, args):
    proc = run_cli(module, *[a.format(tmp=tmp_path) for a in args], "--device", "cuda")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: device: 'cuda', but torch sees no CUDA GPU on this machine"]
    assert not (tmp_path / "o").exists()
