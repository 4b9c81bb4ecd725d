"""Fault injection: kill -9 the encoder mid-run, rerun, and get byte-identical output."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import write_jsonl


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.integration
def test_kill_9_mid_run_then_rerun_is_byte_identical(tmp_path, tiny_model, tiny_sae):
    docs = [{"_id": f"d{i}", "text": f"document {i} about " + "protein folding and yeast cells " * (1 + i % 9)}
            for i in range(600)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", docs)
    cmd = [sys.executable, "-m", "splare_pyserini.encode", "--input", str(corpus), "--model", str(tiny_model),
           "--sae", str(tiny_sae), "--chunk-size", "10", "--batch-size", "2"]
    subprocess.run(cmd + ["--output", str(tmp_path / "clean")], check=True, capture_output=True)
    expected = snapshot(tmp_path / "clean")
    assert len([k for k in expected if k.startswith("corpus/")]) == 60

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--output", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "corpus").glob("part-*.jsonl"))) < 3:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list((killed / "corpus").glob("part-*.jsonl"))
    assert 3 <= len(finished) < 60, "the encoder must be killed mid-run"
    for part in finished:  # nothing under a final name is partial
        assert len(part.read_text().splitlines()) == 10
    subprocess.run(cmd + ["--output", str(killed)], check=True, capture_output=True)
    assert snapshot(killed) == expected


def test_same_input_and_flags_give_identical_files(tmp_path, tiny_model, tiny_sae):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"_id": str(i), "text": f"text {i} " * (i + 1)} for i in range(30)])
    from splare_pyserini.encode import main

    for out in ("a", "b"):
        main(["--input", str(corpus), "--output", str(tmp_path / out), "--model", str(tiny_model),
              "--sae", str(tiny_sae), "--chunk-size", "7"])
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
