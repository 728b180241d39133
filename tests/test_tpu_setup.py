"""tpu_setup.sh: the gcloud commands it prints under --dry-run, its help and errors, shellcheck."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tpu_setup.sh")


@pytest.fixture(autouse=True)
def trap_gcloud(tmp_path, monkeypatch):
    """A gcloud first on PATH that records any call: a dry run must never run gcloud."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gcloud_called"
    (bin_dir / "gcloud").write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 99\n')
    (bin_dir / "gcloud").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for var in ("TPU_NAME", "TPU_ZONE", "TPU_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    yield
    assert not marker.exists(), f"gcloud was called: {marker.read_text()}"


def tpu_setup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def gcloud_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("gcloud ")]


def test_dry_run_create_describes_first_then_creates():
    result = tpu_setup("--dry-run", "create", "--name=lm", "--zone", "us-central2-b",
                       "--accelerator-type=v4-32", "--spot", "--project=proj")
    assert result.returncode == 0, result.stderr
    describe, create = gcloud_lines(result.stdout)
    assert describe.startswith("gcloud compute tpus tpu-vm describe lm ")
    assert create.startswith("gcloud compute tpus tpu-vm create lm ")
    for flag in ("--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
                 "--zone=us-central2-b", "--project=proj"):
        assert flag in create.split()
    assert "--zone=us-central2-b" in describe.split()


@pytest.mark.parametrize("accelerator,runtime", [("v5litepod-16", "v2-alpha-tpuv5-lite"),
                                                 ("v5p-8", "v2-alpha-tpuv5"),
                                                 ("v6e-8", "v2-alpha-tpuv6e")])
def test_runtime_version_defaults_per_generation(accelerator, runtime):
    result = tpu_setup("--dry-run", "create", f"--accelerator-type={accelerator}")
    assert f"--version={runtime}" in gcloud_lines(result.stdout)[-1].split()
    explicit = tpu_setup("--dry-run", "create", f"--accelerator-type={accelerator}",
                         "--runtime-version", "my-image")
    assert "--version=my-image" in gcloud_lines(explicit.stdout)[-1].split()
    assert "--spot" not in explicit.stdout


def test_dry_run_setup_copies_the_checkout_and_installs_on_every_worker():
    result = tpu_setup("--dry-run", "setup", "--name", "lm")
    assert result.returncode == 0, result.stderr
    scp, ssh = gcloud_lines(result.stdout)
    assert scp.startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in scp.split()
    assert ssh.startswith("gcloud compute tpus tpu-vm ssh lm ") and "--worker=all" in ssh.split()
    assert "pip install -q -e" in ssh and ".[tpu]" in ssh and "venv" in ssh
    assert "git ls-files -co --exclude-standard" in result.stdout
    clone = tpu_setup("--dry-run", "setup", "--git", "https://example.com/jaxlm.git")
    (ssh,) = gcloud_lines(clone.stdout)
    assert "git clone https://example.com/jaxlm.git" in ssh and "--worker=all" in ssh.split()


def test_dry_run_run_executes_in_the_project_on_every_worker_with_logs():
    result = tpu_setup("--dry-run", "run", "experiments/pretrain.py",
                       "--config.model.preset=small", "--workdir=gs://bucket/run")
    assert result.returncode == 0, result.stderr
    (ssh,) = gcloud_lines(result.stdout)
    assert ssh.startswith("gcloud compute tpus tpu-vm ssh jaxlm-tpu --worker=all ")
    assert ("python experiments/pretrain.py --config.model.preset=small "
            "--workdir=gs://bucket/run") in ssh
    assert "cd ~/jaxlm" in ssh and "tee ~/jaxlm-logs/" in ssh and "$(hostname).log" in ssh


def test_status_and_delete():
    status = tpu_setup("--dry-run", "status", "--name=lm")
    assert gcloud_lines(status.stdout)[0].startswith("gcloud compute tpus tpu-vm describe lm ")
    delete = tpu_setup("--dry-run", "delete", "--name=lm", "--zone=europe-west4-a")
    assert gcloud_lines(delete.stdout)[-1] == ("gcloud compute tpus tpu-vm delete lm --quiet "
                                               "--zone=europe-west4-a")


def test_help_and_errors():
    top = tpu_setup("--help")
    assert top.returncode == 0 and "Subcommands:" in top.stdout and "--dry-run" in top.stdout
    for sub in ("create", "setup", "run", "status", "delete"):
        result = tpu_setup(sub, "--help")
        assert result.returncode == 0 and f"{sub}" in result.stdout.splitlines()[0]
    bad = tpu_setup("launch")
    assert bad.returncode == 2 and "unknown subcommand 'launch'" in bad.stderr
    assert tpu_setup().returncode == 2
    assert tpu_setup("--dry-run", "create", "--bogus").returncode == 2
    assert tpu_setup("--dry-run", "run").returncode == 2
    unknown = tpu_setup("--dry-run", "create", "--accelerator-type=v9-8")
    assert unknown.returncode == 2 and "v9-8" in unknown.stderr


# .ci/run installs shellcheck; elsewhere the lint runs where the tool is.
@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (Debian/Ubuntu: apt-get install shellcheck)")
def test_shellcheck_is_clean():
    result = subprocess.run([shutil.which("shellcheck"), SCRIPT], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout
