"""XLA flags for the test processes.

The tests check values, not speed (experiments/benchmark.py measures speed), and most of their
time goes to compiling many small programs: XLA:CPU compiles them without LLVM's costly
optimisation passes, which takes about a fifth less of the suite's time.
"""

import os

COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def script_environment() -> dict[str, str]:
    """The environment of a script run as a subprocess: CPU only and the tests' compile flags,
    but not the 8-device flag, since the script sets its own device count."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = COMPILE_FLAGS
    env["JAX_PLATFORMS"] = "cpu"
    return env
