"""The one place that imports TensorFlow: tf.data runs on the host, so TF must not take the
accelerators JAX uses. Everything in jaxlm that needs `tf` gets it from `import_tf()`."""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_configured = False


def import_tf() -> Any:
    """`import tensorflow`, with every GPU and TPU hidden from it."""
    global _configured
    import tensorflow as tf

    with _lock:
        if not _configured:
            for kind in ("GPU", "TPU"):
                try:
                    tf.config.set_visible_devices([], kind)
                except (RuntimeError, ValueError):  # already initialized, or no such support
                    pass
            _configured = True
    return tf
