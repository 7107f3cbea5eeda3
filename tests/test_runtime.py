"""esdlib.runtime.keep_freed_memory: freed tensors are reused instead of re-faulted."""

import subprocess
import sys

import pytest

import esdlib.runtime as runtime

# Twenty "training steps": hold a set of activation-sized tensors (1–16 MiB), then free them;
# prints the minor page faults of those steps.
_PROBE = """
import resource, sys, torch
import esdlib.runtime as rt
applied = rt.keep_freed_memory() if sys.argv[1] == "1" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    held = [torch.ones(n * 2**18) for n in (16, 8, 4, 16, 8, 4, 2, 1)]
    del held
step()  # first touch of the heap, not counted
start = faults()
for _ in range(20):
    step()
print(applied, faults() - start)
"""


def _probe(tune: bool) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if tune else "0"], check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_tensors_are_reused_without_page_faults():
    applied, tuned = _probe(True)
    _, default = _probe(False)
    assert applied == "True"
    # tuned: the 20 steps re-fault fewer pages than one fresh 16 MiB block has (4096)
    assert tuned < 1024
    # default glibc: big blocks are fresh mmaps or trimmed heap, faulted again step after step
    assert default > 8 * max(tuned, 256)


def test_invalid_top_pad_fails_before_changing_anything():
    with pytest.raises(ValueError, match="top_pad_bytes"):
        runtime.keep_freed_memory(-1)
