"""The run configuration: one ml_collections ConfigDict, grouped by section.

Every field has an inline comment; any field is overridable from the command line as
`--config.section.field=value`. `validate` fails before any compile, naming the field, the value and
what would be valid.
"""

from __future__ import annotations

import ml_collections

from jaxlm.models.config import FIELDS as MODEL_FIELDS
from jaxlm.models.config import ModelConfig, model_config_from


def get_config() -> ml_collections.ConfigDict:
    """The default configuration: the tiny decoder on all local devices."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # init and data seed

    config.model = ml_collections.ConfigDict()
    config.model.preset = "tiny"  # tiny | small | base | large | gpt2 | bert_base | t5_base | ...
    # Every architecture field of jaxlm.models.ModelConfig; None keeps the preset's value.
    for field in MODEL_FIELDS:
        config.model[field] = None
    config.model.family = "decoder"  # decoder | encoder | encoder_decoder

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # data-parallel axis size; -1 = all remaining devices
    config.mesh.fsdp = 1  # parameter-sharding (ZeRO-3) axis size
    config.mesh.tensor = 1  # tensor-parallel axis size
    return config


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The validated, frozen model hyperparameters of a run config."""
    section = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
    return model_config_from(section)


def validate(config: ml_collections.ConfigDict) -> ModelConfig:
    """Checks every section that can be checked without devices; returns the model config."""
    for axis in ("data", "fsdp", "tensor"):
        value = config.mesh[axis]
        if not isinstance(value, int) or value == 0 or value < -1:
            raise ValueError(f"mesh.{axis}={value!r} is invalid: expected a positive size or -1.")
    return model_config(config)
