"""esdlib.runtime.keep_freed_memory: freed tensors are reused instead of re-faulted."""

import subprocess
import sys

import pytest

import esdlib.runtime as runtime

# Twenty "training steps": hold a set of activation-sized tensors (5–40 MiB; a ResNet-18 stage-1
# map at T·B = 128 is 32 MiB), then free them; prints the median minor page faults of a step.
# glibc always serves blocks above 32 MiB (its largest mmap threshold) with a fresh mmap, so
# by default every step re-faults each 40 MiB block (10240 pages).
_PROBE = """
import resource, statistics, sys, torch
import esdlib.runtime as rt
applied = rt.keep_freed_memory() if sys.argv[1] == "1" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    held = [torch.ones(n * 2**18) for n in (40, 20, 10, 40, 5)]
    del held
step()  # first touch of the heap, not counted
per_step = []
for _ in range(20):
    start = faults()
    step()
    per_step.append(faults() - start)
print(applied, int(statistics.median(per_step)))
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
    assert default >= 10_000  # at least one 40 MiB block faulted afresh in a typical step
    # tuned: a typical step reuses the heap; at most one 1 MiB page run is touched afresh
    assert tuned <= 256


def test_invalid_top_pad_fails_before_changing_anything():
    with pytest.raises(ValueError, match="top_pad_bytes"):
        runtime.keep_freed_memory(-1)
