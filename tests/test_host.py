"""Tests for jaxlm.host: glibc's allocator reuses large freed blocks once tuned."""

import subprocess
import sys

import pytest

# 20 rounds of allocating, touching and freeing 64 MB: the page faults they cost.
_PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from jaxlm import host
    assert host.tune_cpu_allocator()
np.ones(16 << 20, np.float32)  # first touch of the heap, before counting
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    np.ones(16 << 20, np.float32)  # 64 MB, freed at once
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")
def test_tuned_allocator_reuses_freed_blocks_instead_of_faulting_new_pages():
    # Untuned, each round maps fresh pages (4 KB or transparent huge pages: hundreds of faults
    # or more per round); tuned, the heap block of the first round is reused.
    default, tuned = _faults("default"), _faults("tuned")
    assert default >= 20 * 16 and tuned * 10 < default, (default, tuned)
