"""jaxlm: Transformer language models in JAX/Flax and a fair comparison of pretraining objectives."""

import os as _os

# The gs:// route, fixed before anything imports etils or gcsfs (epath reads its switch once per
# process, gcsfs at import): epath goes through fsspec/gcsfs rather than tf.io.gfile, the route the
# Cloud Storage emulator tests exercise, and gcsfs skips its gRPC "is this bucket zonal?" probe.
# setdefault: a caller's own choice wins. docs/design.md, "I/O and Cloud Storage".
_os.environ.setdefault("EPATH_USE_TF", "false")
_os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

__version__ = "0.1.0"
