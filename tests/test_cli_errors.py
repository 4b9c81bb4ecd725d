"""Every CLI turns a user error into one line on stderr and exit code 2, never a traceback."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module,args,message", [
    ("index", ["--input", "{tmp}/nope", "--index", "{tmp}/idx"], "--input {tmp}/nope: no such folder of encoded vectors"),
    ("search", ["--index", "{tmp}/nope", "--topics", "{tmp}/t.tsv", "--output", "{tmp}/r.trec", "--bm25"],
     "--index {tmp}/nope: no such index folder"),
    ("evaluate", ["--qrels", "scifact", "--run", "{tmp}/missing.trec"], "--run {tmp}/missing.trec: no such run file"),
    ("beir", ["--dataset", "{tmp}", "--output", "{tmp}/out"], "{tmp}: not a BEIR folder (no corpus.jsonl)"),
])
def test_cli_user_errors(tmp_path, module, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", f"splare_pyserini.{module}", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: " + message.format(tmp=tmp_path)
    assert "Traceback" not in proc.stderr
