"""Planning a run at pod scale: compile the real train step for a target, read its bill."""

from jaxlm.planning.plan import Plan, make_plan
from jaxlm.planning.targets import Target, cpu_target, tpu_target

__all__ = ["Plan", "Target", "cpu_target", "make_plan", "tpu_target"]
