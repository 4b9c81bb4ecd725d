"""Large tensors on transparent huge pages: importing the package before torch turns PyTorch's
THP_MEM_ALLOC_ENABLE on (fewer page faults per batch), and a user's own setting wins."""
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import resource, sys
import splare_pyserini, torch, os
torch.ones(64 << 18)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.ones(64 << 18)  # 64 MiB of float32, written in full
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@functools.lru_cache(maxsize=None)
def probe(setting: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    return out[0], int(out[1])


def thp_mode() -> str:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    text = path.read_text() if path.exists() else ""
    return text[text.find("[") + 1:text.find("]")] if "[" in text else "never"


def test_package_import_turns_it_on_and_the_users_setting_wins():
    assert probe(None)[0] == "1"
    assert probe("0")[0] == "0"


@pytest.mark.skipif(thp_mode() != "madvise", reason="only where the kernel gives huge pages to those who ask "
                                                    "(never: to none; always: to PyTorch's default as well)")
def test_large_blocks_fault_far_fewer_pages():
    _, default = probe("0")  # 5 x 64 MiB on 4 KiB pages: 81,920 faults
    _, huge = probe(None)
    assert default > 20_000 and huge < default / 10
