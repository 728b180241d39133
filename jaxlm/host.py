"""Host-side tuning for training on CPU: glibc's allocator kept from handing XLA's buffers back.

XLA:CPU allocates each step's temporaries afresh (tens of MB per device for the comparison's
arms). glibc serves blocks that large with mmap and unmaps them on free, so every step touches
brand-new pages: ~35k minor page faults per step for the comparison's CLM arm, the kernel zeroing
~140 MB per step. With mmap off for large blocks, no trimming and one arena, the freed blocks are
reused: ~2k faults per step, and a faster step (MFU measured in experiments/benchmark.py train
and on the comparison's arms). The memory is then kept by the process until it exits, which is
what a training process wants.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_SETTINGS = (
    (_M_MMAP_MAX, 0),  # large blocks from the heap, never mmap / munmap per allocation
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # never give the heap's top back to the system
    (_M_TOP_PAD, 256 << 20),  # grow the heap in 256 MB steps
    (_M_ARENA_MAX, 1),  # one arena: blocks freed by one XLA thread are reused by any other
)


def tune_cpu_allocator() -> bool:
    """Applies the settings above to glibc's malloc; False (nothing changed) elsewhere.

    Call it before JAX starts its CPU backend (the arena limit binds threads that have not
    allocated yet): the comparison does, when it runs on CPU (`num_cpu_devices` > 0).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = all(mallopt(param, value) == 1 for param, value in _SETTINGS)
    if not applied:
        log.warning("glibc mallopt refused a setting: CPU steps may page-fault on fresh buffers")
    return applied
