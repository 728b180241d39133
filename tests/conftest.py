"""Test set-up: 8 fake CPU devices, configured before jax is imported anywhere."""

import os

# Must run before the first `import jax`: pytest imports conftest.py before any test module.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TensorFlow (tf.data only) must never grab an accelerator or flood the log.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
