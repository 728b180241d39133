"""Planning: per-device state bytes, collectives of data vs fsdp meshes, a plan that does not fit,
and the HLO and topology parsers (8 fake CPU devices, the tiny decoder)."""

import json
import os
import subprocess
import sys

import jax
import pytest

from jaxlm import config as config_lib
from jaxlm.planning import cpu_target, hlo, make_plan, targets
from jaxlm.planning.format import format_plan
from tests.xla import script_environment

# The tiny decoder (d_model 64, 2 layers, d_ff 256, 4 heads of 16, vocab 384, tied embeddings).
EMBED_SHARDED = 2 * 64 * 256 * 2 + 2 * 64 * 64 * 4 + 384 * 64  # mlp, attention, embedding
REPLICATED = 64 + 2 * 64 * 2  # final norm, the two per-layer norms
PARAMS = EMBED_SHARDED + REPLICATED  # 123,200


def tiny_config(data, fsdp, **train):
    config = config_lib.get_config()
    config.model.preset = "tiny"
    config.data.seq_len = 64
    config.train.batch_size = 16
    config.mesh.data, config.mesh.fsdp = data, fsdp
    for key, value in train.items():
        config.train[key] = value
    return config


@pytest.fixture(scope="module")
def plans():
    devices = jax.devices()[:8]
    return {mesh: make_plan(tiny_config(*mesh), cpu_target(devices)) for mesh in [(8, 1), (1, 8)]}


def test_replicated_state_bytes_are_every_parameter_on_every_device(plans):
    plan = plans[(8, 1)]
    assert plan.params == PARAMS
    assert plan.param_bytes == 4 * PARAMS  # float32
    # AdamW: mu and nu in float32, plus two int32 step counters (Adam's, the schedule's).
    assert plan.optimizer_bytes == 2 * 4 * PARAMS + 2 * 4


def test_fsdp_state_bytes_split_the_embed_axis_over_the_devices(plans):
    plan = plans[(1, 8)]
    per_device = EMBED_SHARDED // 8 + REPLICATED
    assert plan.param_bytes == 4 * per_device
    assert plan.optimizer_bytes == 2 * 4 * per_device + 2 * 4


def test_fsdp_adds_all_gathers_of_the_parameters_in_every_layer(plans):
    data, fsdp = plans[(8, 1)].collectives, plans[(1, 8)].collectives
    assert "all-gather" not in data and data["all-reduce"]["executions"] >= 1
    gathers = fsdp["all-gather"]
    # Inside the scan over 2 layers: executed more often than the instructions appear.
    assert gathers["executions"] > gathers["instructions"]
    assert plans[(1, 8)].unknown_trip_loops == []
    assert plans[(1, 8)].collective_seconds["ici"] > 0


def test_the_compiled_memory_is_reported_and_fits_without_a_limit(plans):
    plan = plans[(8, 1)]
    assert plan.argument_bytes >= plan.param_bytes + plan.optimizer_bytes
    assert plan.temp_bytes > 0 and plan.fits is None
    assert plan.flops_per_step > 0 and plan.mesh == {"data": 8, "fsdp": 1, "tensor": 1}


def test_an_oversized_plan_reports_its_largest_buffers_and_what_to_change():
    plan = make_plan(tiny_config(8, 1), cpu_target(jax.devices()[:8]), hbm_bytes=2**20)
    assert plan.fits is False and plan.peak_bytes > 2**20
    assert plan.largest_buffers and plan.largest_buffers[0]["bytes"] > 0
    assert plan.largest_state[0]["name"] and plan.suggestions
    text = format_plan(plan)
    assert "DOES NOT FIT" in text and "largest buffers" in text
    assert "--config.mesh.fsdp=8" in text


def test_replica_groups_in_every_spelling():
    assert hlo.replica_groups("replica_groups={{0,2},{1,3}}, x") == [[0, 2], [1, 3]]
    assert hlo.replica_groups("replica_groups=[2,2]<=[4], x") == [[0, 1], [2, 3]]
    assert hlo.replica_groups("replica_groups=[2,2]<=[2,2]T(1,0), x") == [[0, 2], [1, 3]]
    assert hlo.replica_groups("replica_groups=mesh['a'=2,'b'=2] {'a'}, x") == [[0, 2], [1, 3]]
    assert hlo.replica_groups("no groups") is None


HLO = """HloModule m

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]{0}) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %ag = f32[32]{0} all-gather(%x), replica_groups=[2,4]<=[8], dimensions={0}
  ROOT %t = (s32[], f32[8]{0}) tuple(%i, %x)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %ar = f32[8]{0} all-reduce(%a), replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%add
  %w = (s32[], f32[8]{0}) while(%tuple), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"12"}}
  ROOT %r = f32[8]{0} get-tuple-element(%w), index=1
}
"""


def test_collectives_inside_a_loop_count_once_per_iteration():
    found, unknown = hlo.collectives(HLO)
    by_kind = {c.kind: c for c in found}
    assert unknown == []
    assert (by_kind["all-gather"].runs, by_kind["all-gather"].group_size) == (12, 4)
    assert by_kind["all-gather"].bytes == 32 * 4
    assert by_kind["all-gather"].wire_bytes == 32 * 4 * 3 / 4
    assert (by_kind["all-reduce"].runs, by_kind["all-reduce"].wire_bytes) == (1, 2 * 32 * 7 / 8)


def test_a_loop_without_a_recorded_trip_count_takes_its_conditions_bound():
    # TPU's HLO records no known_trip_count: the scan's `i < 24` condition gives it.
    text = HLO.replace(', backend_config={"known_trip_count":{"n":"12"}}', "").replace(
        "  ROOT %c = pred[] constant(true)",
        "  %n = s32[] constant(24)\n  %i = s32[] get-tuple-element(%p), index=0\n"
        "  ROOT %c = pred[] compare(%i, %n), direction=LT")
    found, unknown = hlo.collectives(text)
    assert unknown == [] and {c.kind: c.runs for c in found}["all-gather"] == 24
    found, unknown = hlo.collectives(HLO.replace(', backend_config={"known_trip_count":{"n":"12"}}',
                                                 ""))
    assert unknown == ["w"] and {c.kind: c.runs for c in found}["all-gather"] == 1


def test_transfers_between_slices_are_dcn_collectives():
    send = ('  %s = (f32[64]{0}, u32[], token[]) send(%a, %t), channel_id=3, is_host_transfer=true, '
            'frontend_attributes={_xla_megascale_transfer_type="ALL_REDUCE"}\n')
    found, _ = hlo.collectives(HLO.replace("  ROOT %r", send + "  ROOT %r"))
    dcn = [c for c in found if c.dcn]
    assert [(c.kind, c.bytes, c.runs) for c in dcn] == [("all-reduce", 64 * 4, 1)]


def test_a_combined_all_reduce_counts_every_array():
    combined = ("  %ar2 = (f32[8]{0}, bf16[16]{0}) all-reduce(%a, %b), "
                "replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%add\n")
    found, _ = hlo.collectives(HLO.replace("  ROOT %r", combined + "  ROOT %r"))
    assert sorted(c.bytes for c in found if c.kind == "all-reduce") == [32, 8 * 4 + 16 * 2]


def test_pieces_of_one_collective_share_its_channel_and_count_once():
    gather = "  %ag{} = f32[32]{{0}} all-gather(%x), channel_id=7, replica_groups=[2,4]<=[8]\n"
    text = HLO.replace("  ROOT %t", gather.format(2) + gather.format(3) + "  ROOT %t")
    found, _ = hlo.collectives(text)
    assert sorted(c.kind for c in found) == ["all-gather", "all-gather", "all-reduce"]


def test_slice_names_resolve_to_chips_and_topologies():
    assert targets.parse_topology("v5p-128")[2:] == ("v5p:4x4x4", 64)
    assert targets.parse_topology("v4-32")[2:] == ("v4:2x2x4", 16)
    assert targets.parse_topology("v5e-256")[2:] == ("v5e:16x16", 256)
    assert targets.chips_of("v5e-256", num_slices=2) == 512
    with pytest.raises(targets.TopologyError, match="v5p-6"):
        targets.parse_topology("v5p-6")


def _plan_script(*args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = script_environment()  # the script sets its own device count
    return subprocess.run([sys.executable, os.path.join(root, "experiments", "plan.py"), *args],
                          capture_output=True, text=True, env=env, timeout=600, cwd=root)


def test_the_script_plans_on_fake_cpu_devices_and_writes_json(tmp_path):
    # The config's mesh.data=-1 yields to the -1 given on the command line.
    result = _plan_script("--config.model.preset=tiny", "--config.data.seq_len=64",
                          "--config.train.batch_size=16", "--cpu_devices=4",
                          "--config.mesh.fsdp=-1", f"--json={tmp_path}/plan.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mesh data=1, fsdp=4, tensor=1" in result.stdout
    assert "CPU-compiler estimates" in result.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["params"] == PARAMS and plan["fits"] is None and plan["collectives"]


def test_the_script_refuses_an_unknown_slice_in_one_line():
    result = _plan_script("--topology=v5p-6")
    assert result.returncode == 2
    assert "config error: --topology='v5p-6' is invalid" in result.stderr
