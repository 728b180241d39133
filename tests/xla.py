"""XLA flags for the test processes.

The tests check values, not speed (experiments/benchmark.py measures speed), and most of their
time goes to compiling many small programs. XLA:CPU compiles them without LLVM's costly
optimisation passes and with its classic element-wise emitters instead of the newer fusion
emitters: each saves about a fifth of a trainer test's time, measured on a 2x2x2-mesh run of the
tiny preset (same losses). The product's own runs keep XLA's defaults.
"""

import os

COMPILE_FLAGS = " ".join([
    "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_use_fusion_emitters=false"])


def script_environment() -> dict[str, str]:
    """The environment of a script run as a subprocess: CPU only and the tests' compile flags,
    but not the 8-device flag, since the script sets its own device count."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = COMPILE_FLAGS
    env["JAX_PLATFORMS"] = "cpu"
    return env
