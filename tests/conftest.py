"""Test set-up: 8 fake CPU devices, configured before jax is imported anywhere."""

import fcntl
import os
import socket

import pytest

# The Cloud Storage emulator's session fixtures (gcs_endpoint, gcs_bucket) for every test module.
pytest_plugins = ["tests.gcs"]

# Must run before the first `import jax`: pytest imports conftest.py before any test module.
from tests.xla import COMPILE_FLAGS  # noqa: E402  (no jax import behind it)

# Flags already in the environment come after the tests' compile flags, and win.
os.environ["XLA_FLAGS"] = " ".join([
    COMPILE_FLAGS, os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"
]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile the same tiny programs many times over (each run builds fresh jitted closures, a
# resume test compiles its step twice, the subprocess tests once per process): a persistent
# compilation cache, shared by the xdist workers and the subprocesses through the environment,
# compiles each program once. It lives in pytest's own cache folder, so a clean clone starts empty.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# TensorFlow (tf.data only) must never grab an accelerator or flood the log.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def forbid_network(mp: pytest.MonkeyPatch) -> None:
    """Any socket connection fails the test: the offline corpus and pipeline never go online."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access in an offline test")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)


@pytest.fixture
def no_network(monkeypatch):
    forbid_network(monkeypatch)


@pytest.fixture(autouse=True)
def short_cpu_peak_timing(monkeypatch):
    """Every CPU training run times the matmul peak behind MFU (~1 s: 0.5 s of warm-up, 0.5 s
    timed); tests time the same matmul for a tenth of that. The peak stays a real timing."""
    from jaxlm import metrics

    real = metrics.measure_matmul_peak
    monkeypatch.setattr(metrics, "measure_matmul_peak",
                        lambda size=1024, seconds=0.05: real(size, seconds))


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> str:
    """A TFDS data_dir holding the offline default corpus (stdlib_docs), built once per run.

    Built the way a run builds it, `load_builder` preparing it on first use, with the network
    refused. Under pytest-xdist the workers share one build: the first takes a file lock and
    builds, the others wait and reuse it.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # worker temp dirs sit inside the run's own
        base = base.parent
    path = base / "stdlib_corpus"
    with open(base / "stdlib_corpus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            from jaxlm.data.sources import DataConfig, load_builder

            with pytest.MonkeyPatch.context() as mp:
                forbid_network(mp)
                # The default corpus is prepared on first use (prepare_default_corpus), not refused.
                assert load_builder(DataConfig(data_dir=str(path))).is_prepared()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return str(path)
