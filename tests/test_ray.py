"""Encoding on Ray (``--ray``): the bytes of one process whatever the number of workers, a worker or the
driver killed with -9 mid-run, a bad input line, and Ray as an optional extra.

The Ray tests share one local Ray instance with 2 CPUs (started once for the module); drivers run in this
process or as ``python -m splare_pyserini.encode --ray <its address>`` subprocesses."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from helpers import write_jsonl
from splare_pyserini.encode import main as encode_main
from splare_pyserini.errors import InputError

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is an optional extra, not installed: pip install -e '.[ray]'")
SHARDS, CHUNK = 3, 5
CHUNKS_PER_SHARD = 20  # the slice's 300 documents in 3 shards of 5-document chunks


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def n_parts(folder):
    return len(list((folder / "corpus").glob("part-*.jsonl")))


# A local Ray instance of 2 CPUs held by its own process: this test process never joins Ray, because the
# suite boots a JVM in it (Lucene), and a JVM and a Ray client in one process crash it (SIGSEGV).
HOLD_RAY = ("import ray, sys; ray.init(address='local', num_cpus=2, object_store_memory=150 * 2**20, "
            "include_dashboard=False, logging_level='WARNING'); print(ray.get_runtime_context().gcs_address, "
            "flush=True); sys.stdin.read(); ray.shutdown()")


@pytest.fixture(scope="module")
def ray_address():
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    address = holder.stdout.readline().strip()
    assert address, "the local Ray instance did not start"
    # the instance authenticates its clients with the token Ray keeps in ~/.ray; the drivers the tests
    # start must be told to present it (a driver started by ray.init's own process inherits this)
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    yield address
    if previous is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = previous
    holder.stdin.close()
    holder.wait(timeout=120)


@pytest.fixture(scope="module")
def args(scifact_slice, tiny_model, tiny_sae):
    return ["--input", str(scifact_slice), "--model", str(tiny_model), "--sae", str(tiny_sae),
            "--chunk-size", str(CHUNK), "--batch-size", "2", "--shard-num", str(SHARDS)]


@pytest.fixture(scope="module")
def expected(tmp_path_factory, args):
    """What one process writes for --shard-id 0..2 --shard-num 3 (queries with shard 0)."""
    out = tmp_path_factory.mktemp("one-process") / "out"
    for shard in range(SHARDS):
        encode_main(args + ["--output", str(out), "--shard-id", str(shard)])
    files = snapshot(out)
    assert len([k for k in files if k.startswith("corpus/")]) == 60 and "queries.jsonl" in files
    return files


def ray_cmd(args, output, address, *extra):
    return [sys.executable, "-m", "splare_pyserini.encode", *args, "--output", str(output), "--ray", address,
            "--ray-cpus-per-worker", "0.5", *extra]


def shard_workers():
    """Pids of this machine's ShardWorker actor processes (Ray titles them ``ray::ShardWorker...``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if handle.read().startswith(b"ray::ShardWorker"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def wait_for(condition, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@needs_ray
@pytest.mark.integration
def test_one_and_three_workers_write_the_bytes_of_one_process(tmp_path, ray_address, args, expected):
    for workers in ("1", "3"):
        subprocess.run(ray_cmd(args, tmp_path / workers, ray_address, "--ray-workers", workers), check=True,
                       capture_output=True)
        assert snapshot(tmp_path / workers) == expected, f"{workers} worker(s)"
    wait_for(lambda: not shard_workers(), 60, "the actors to end after the run")
    proc = subprocess.run(ray_cmd(args, tmp_path / "big", ray_address, "--ray-workers", "5",
                                  "--ray-cpus-per-worker", "1"), capture_output=True, text=True)
    assert proc.returncode == 2 and "--ray-workers 5 needs 5 CPU" in proc.stderr.strip().splitlines()[-1]


@needs_ray
@pytest.mark.integration
def test_worker_killed_mid_shard_is_retried_and_output_is_byte_identical(tmp_path, ray_address, args, expected):
    out = tmp_path / "out"
    driver = subprocess.Popen(ray_cmd(args, out, ray_address, "--ray-workers", "2"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stderr), daemon=True)
    reader.start()
    victim = {}

    def a_shard_is_half_done():  # the driver logs which worker process holds each shard
        for line in list(lines):
            found = re.search(r"shard (\d)/3: started on worker \S+:(\d+)", line)
            if found and 1 <= len(list((out / "corpus").glob(f"part-00{found[1]}-*.jsonl"))) < CHUNKS_PER_SHARD:
                victim.update(shard=int(found[1]), pid=int(found[2]))
                return True
        return False

    # A shard of the tiny model is encoded in well under a second, quicker than the driver logs where it
    # runs: freeze every worker as soon as the first chunk lands, so that a shard is caught mid-way whatever
    # the machine's speed, then kill one whose shard has finished chunks and more to go.
    wait_for(lambda: (out / "corpus").is_dir() and n_parts(out) >= 1, 120, "the first finished chunk")
    frozen = shard_workers()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(a_shard_is_half_done, 60, "a shard with finished chunks, still being encoded")
        os.kill(victim["pid"], signal.SIGKILL)
    finally:
        for pid in frozen:
            if pid != victim.get("pid"):
                os.kill(pid, signal.SIGCONT)
    assert driver.wait(timeout=300) == 0, "".join(lines)
    reader.join(timeout=10)
    stderr = "".join(lines)
    assert victim["pid"] not in shard_workers()
    assert re.search(rf"shard {victim['shard']}/3: worker \S+:{victim['pid']} lost; resumed on worker", stderr), stderr
    assert "finished chunk(s) reused" in stderr  # a fresh folder, yet chunks reused: the retry resumed the shard
    assert snapshot(out) == expected


@needs_ray
@pytest.mark.integration
def test_driver_killed_mid_run_then_rerun_resumes_byte_identical(tmp_path, ray_address, args, expected):
    out = tmp_path / "out"
    cmd = ray_cmd(args, out, ray_address, "--ray-workers", "2")
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (out / "corpus").is_dir() and n_parts(out) >= 4, 120, "chunks from the workers")
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    at_kill = n_parts(out)
    assert at_kill < 60, "the driver must be killed mid-run"
    wait_for(lambda: not shard_workers(), 60, "Ray to end the killed driver's actors")
    for part in (out / "corpus").glob("part-*.jsonl"):  # nothing under a final name is partial
        assert len(part.read_text().splitlines()) == CHUNK
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "finished chunk(s) reused" in rerun.stderr
    assert snapshot(out) == expected


@needs_ray
@pytest.mark.integration
def test_beir_with_ray_writes_the_files_of_one_process_then_searches(tmp_path, ray_address, scifact_slice, tiny_model,
                                                                     tiny_sae, expected):
    """In its own process, as users run it: Ray and the JVM must never share one (the process that
    joined Ray leaves it before Lucene boots; a JVM booted beside a live Ray client crashed at shutdown)."""
    proc = subprocess.run([sys.executable, "-m", "splare_pyserini.beir", "--dataset", str(scifact_slice), "--output",
                           str(tmp_path), "--no-bm25", "--model", str(tiny_model), "--sae", str(tiny_sae),
                           "--chunk-size", str(CHUNK), "--batch-size", "2", "--shard-num", str(SHARDS),
                           "--ray", ray_address, "--ray-workers", "2", "--ray-cpus-per-worker", "0.5"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    vectors = snapshot(tmp_path / "splare" / "vectors")
    same = [k for k in expected if k != "encode_info.json"]  # the info file records the source's name
    assert {k: vectors[k] for k in same} == {k: expected[k] for k in same}
    run = (tmp_path / "splare" / "run.trec").read_text().splitlines()
    assert len({line.split()[0] for line in run}) == 40
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["results"]["SPLARE"]["nDCG@10"] > 0


def test_bad_line_in_one_shard_is_one_error_before_ray_starts(tmp_path):
    """Input is read in the driver: the bad line (in the last of 3 shards) fails before any worker."""
    rows = [{"_id": f"d{i}", "text": f"document {i}"} for i in range(30)]
    rows[24] = '{"_id": "d24", "text": "cut short'
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows)
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "splare_pyserini.encode", "--input", str(corpus), "--output",
                           str(tmp_path / "o"), "--ray", "local", "--shard-num", "3"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {corpus}:25: malformed JSON (Invalid control character at at column 34)"]
    assert not (tmp_path / "o").exists() and time.time() - started < 60


def test_without_ray_the_option_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"_id": "a", "text": "x"}])
    with pytest.raises(InputError, match=r"optional extra: pip install 'splare-pyserini\[ray\]'"):
        encode_main(["--input", str(corpus), "--output", str(tmp_path / "o"), "--ray", "local"])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra,message", [
    (["--shard-id", "1", "--shard-num", "2"], "shard_id: with --ray every shard is encoded"),
    (["--ray-workers", "0"], "ray_workers: must be >= 1, got 0"),
    (["--ray-cpus-per-worker", "0"], "ray_cpus_per_worker: must be > 0"),
])
def test_ray_options_are_checked_before_anything_runs(tmp_path, extra, message):
    with pytest.raises(InputError, match=message):
        encode_main(["--input", "scifact", "--output", str(tmp_path / "o"), "--ray", "local", *extra])


def test_beir_takes_several_shards_only_with_ray(tmp_path):
    from splare_pyserini.beir import main as beir_main

    with pytest.raises(InputError, match="shard_num: more than one shard needs --ray"):
        beir_main(["--output", str(tmp_path / "o"), "--shard-num", "2"])


def test_package_imports_without_ray():
    code = ("import sys; sys.modules['ray'] = None; import splare_pyserini.encode, splare_pyserini.beir, "
            "splare_pyserini.distributed")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_shard_slice_is_the_corpus_seen_from_one_shard():
    from splare_pyserini.distributed import ShardSlice
    from splare_pyserini.encode import shard_range

    corpus = list(range(10))
    start, end = shard_range(10, 1, 3)
    piece = ShardSlice(corpus[start:end], start, 10)
    assert len(piece) == 10 and piece[start:end] == corpus[start:end] and piece[start + 1:start + 3] == [5, 6]
    with pytest.raises(IndexError):
        piece[0:2]
