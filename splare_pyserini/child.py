"""Child interpreters that die with their parent: work that must not share this process (the JVM, libtorch
training under the JVM's signal handlers) runs in one, and a ``kill`` (SIGTERM) or an interrupt of the parent
ends it too, so no orphan goes on writing a folder that a rerun reads or resumes from."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_child(module: str, argv: list[str], capture_output: bool = False) -> subprocess.CompletedProcess:
    """``python -m module *argv`` in a child interpreter; ``capture_output``: its stdout and stderr together."""
    pipe = subprocess.PIPE if capture_output else None
    proc = subprocess.Popen([sys.executable, "-m", module, *argv], stdout=pipe,
                            stderr=subprocess.STDOUT if capture_output else None, text=True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        output, _ = proc.communicate()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return subprocess.CompletedProcess(proc.args, proc.returncode, output or "")
