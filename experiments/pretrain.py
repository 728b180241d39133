"""Pretrain one model with one objective: the entry point of every run.

    # the tiny decoder, causal LM on the offline corpus (CPU, about a minute):
    python experiments/pretrain.py --workdir=/tmp/jaxlm/clm \
        --config.train.steps=300 --config.data.seq_len=128 --config.train.batch_size=16

    # span corruption on an encoder-decoder, over 8 fake CPU devices as (data 2, fsdp 2, tensor 2):
    python experiments/pretrain.py --workdir=/tmp/jaxlm/span --num_cpu_devices=8 \
        --config.objective=span_corruption --config.mesh.data=2 --config.mesh.fsdp=2 \
        --config.mesh.tensor=2

    # a config file (experiments/configs/*.py) with overrides on top:
    python experiments/pretrain.py --config=experiments/configs/span_corruption.py:small \
        --workdir=gs://BUCKET/runs/span_small --config.train.steps=20000

    # Cloud TPU pod slice, every worker (jax.distributed finds the others itself):
    bash tpu_setup.sh run python experiments/pretrain.py --multihost --workdir=gs://BUCKET/run

    # several processes on one machine (CPU, gloo collectives), e.g. two of them:
    python experiments/pretrain.py --coordinator_address=localhost:12355 --num_processes=2 \
        --process_id=0 --workdir=/tmp/jaxlm/mp &
    python experiments/pretrain.py --coordinator_address=localhost:12355 --num_processes=2 \
        --process_id=1 --workdir=/tmp/jaxlm/mp

Every config field (jaxlm/config.py) is overridable as --config.section.field=value. The run
directory gets config.json (resolved), metrics.jsonl, TensorBoard events and checkpoints/; the
same command on an existing workdir resumes from its latest checkpoint, data position included.
Invalid configs fail within seconds, naming the field, without a traceback (exit status 2).
A preempted run (SIGTERM / SIGINT) saves its step and exits with status 143.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from absl import logging as absl_logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxlm import cli  # noqa: E402
from jaxlm import config as config_lib  # noqa: E402

_CONFIG = cli.define_config_flag(default=config_lib.__file__, documented_in="jaxlm/config.py",
                                 config=config_lib.get_config())
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local or gs://).", required=True)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in [0, n).")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                               "Call jax.distributed.initialize() with no arguments (Cloud TPU "
                               "pods and clusters where JAX finds its peers itself).")
_NUM_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", None,
                                        "Split the CPU into this many devices (tests of meshes).")


def _initialize_jax() -> None:
    import jax

    if _NUM_CPU_DEVICES.value:
        jax.config.update("jax_num_cpu_devices", _NUM_CPU_DEVICES.value)
    if _COORDINATOR.value:
        if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
            raise config_lib.ConfigError("--coordinator_address needs --num_processes and "
                                         "--process_id")
        if jax.config.jax_platforms in (None, "", "cpu") and _on_cpu():
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif _MULTIHOST.value:
        jax.distributed.initialize()


def _on_cpu() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    return platforms == "cpu" or not any(
        os.path.exists(p) for p in ("/dev/accel0", "/dev/nvidia0", "/dev/vfio"))


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO
        absl_logging.set_verbosity(absl_logging.WARNING)
    from jaxlm.checkpoint import CheckpointError
    from jaxlm.trainer import TrainingDiverged, train

    try:
        config_lib.resolve(_CONFIG.value)  # seconds, before JAX initialises anything
        _initialize_jax()
        summary = train(_CONFIG.value, _WORKDIR.value)
    except config_lib.ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    except (TrainingDiverged, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if summary.stopped == "preempted":
        return 143
    return 0


if __name__ == "__main__":
    cli.run(main)
