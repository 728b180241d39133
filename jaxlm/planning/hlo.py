"""Collectives and large buffers of a compiled program, read from its optimized HLO text.

An op inside a while loop's body (the scanned layers, the micro-batch loop) runs once per
iteration: its count and bytes are multiplied by the loop's trip count, XLA's `known_trip_count`
(CPU) or the constant bound of the loop's `i < N` condition (TPU records no trip count); loops
with neither count once and are flagged.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterator

import numpy as np

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
                "s4": 0.5, "u4": 0.5}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s([a-z][\w\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_CALLS = re.compile(r"\b(?:body|calls|to_apply|condition|branch_computations)=\{?([^}\s]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')


def array_bytes(type_text: str) -> list[float]:
    """Bytes of each array in an HLO type (`f32[8,128]{1,0}` or a tuple of them)."""
    sizes = []
    for dtype, dims in _ARRAY.findall(type_text):
        width = _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else None)
        if width is not None:
            sizes.append(width * float(np.prod([int(d) for d in dims.split(",") if d] or [1])))
    return sizes


@dataclasses.dataclass
class Instruction:
    name: str
    opcode: str
    type_text: str
    rest: str  # operands and attributes

    @property
    def bytes(self) -> float:
        sizes = array_bytes(self.type_text)
        if not sizes:
            return 0.0
        if self.opcode == "send" or (self.opcode.endswith("-start")
                                     and self.opcode != "all-reduce-start"):
            return max(sizes)  # a tuple of (operand, result, scratch): the result, the largest
        return sum(sizes)  # one array, or several reduced together (a combined all-reduce)

    @property
    def op_name(self) -> str:
        match = re.search(r'op_name="([^"]*)"', self.rest)
        return match.group(1) if match else ""


def parse_computations(text: str) -> tuple[dict[str, list[Instruction]], str]:
    """{computation name: its instructions} and the entry computation's name."""
    computations: dict[str, list[Instruction]] = {}
    entry, current = "", None
    for line in text.splitlines():
        instruction = _INSTRUCTION.match(line) if current is not None else None
        if instruction:
            computations[current].append(Instruction(instruction.group(1), instruction.group(3),
                                                     instruction.group(2), instruction.group(4)))
            continue
        header = _COMPUTATION.match(line)
        if header and "=" not in line.split("(")[0]:
            current = header.group(2)
            computations[current] = []
            entry = current if header.group(1) else entry
        elif line.strip() == "}":
            current = None
    return computations, entry


def condition_bound(condition: list[Instruction]) -> int | None:
    """N of a loop condition `i < N` with N a constant (a scan from 0 in steps of 1: what
    lax.scan and fori_loop compile to when XLA records no known_trip_count, as on TPU)."""
    constants = {i.name: int(m.group(1)) for i in condition if i.opcode == "constant"
                 for m in [re.match(r"(-?\d+)\)", i.rest)] if m and i.type_text[:3] in ("s32", "u32", "s64", "u64")}
    for inst in condition:
        if inst.opcode == "compare" and "direction=LT" in inst.rest:
            operands = re.findall(r"%([\w.\-]+)", inst.rest.split(")")[0])
            if len(operands) == 2 and operands[1] in constants:
                return constants[operands[1]]
    return None


def executions(computations: dict[str, list[Instruction]], entry: str
               ) -> tuple[dict[str, int], list[str]]:
    """How often each computation runs per call of `entry` (while bodies: x trip count), and
    the while loops whose trip count XLA did not record (counted once)."""
    runs: dict[str, int] = collections.defaultdict(int)
    unknown: list[str] = []

    def visit(name: str, times: int, depth: int = 0) -> None:
        if name not in computations or depth > 64:
            return
        runs[name] += times
        for inst in computations[name]:
            if inst.opcode.endswith("-done"):  # its start already holds the called computation
                continue
            trip = 1
            if inst.opcode == "while":
                found = _TRIP.search(inst.rest)
                condition = re.search(r"condition=%?([\w.\-]+)", inst.rest)
                bound = condition_bound(computations.get(condition.group(1), [])) \
                    if condition else None
                trip = int(found.group(1)) if found else bound or 1
                if not found and bound is None:
                    unknown.append(inst.name)
            for callee_list in _CALLS.findall(inst.rest):
                for callee in callee_list.split(","):
                    callee = callee.strip().lstrip("%")
                    body = f"body=%{callee}" in inst.rest or f"body={callee}" in inst.rest
                    visit(callee, times * (trip if body else 1), depth + 1)

    visit(entry, 1)
    return dict(runs), unknown


def _kind(opcode: str) -> str | None:
    base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
    return base if base in COLLECTIVES else None


def replica_groups(rest: str) -> list[list[int]] | None:
    """The device groups of a collective, for the explicit (`{{0,1},{2,3}}`), iota
    (`[2,4]<=[4,2]T(1,0)`) and mesh (`mesh['x'=4,'y'=2] {'x'}`) spellings; None otherwise."""
    explicit = re.search(r"replica_groups=\{(\{[\d,]*\}(?:,\{[\d,]*\})*)\}", rest)
    if explicit:
        return [[int(i) for i in g.split(",") if i] for g in re.findall(r"\{([\d,]*)\}",
                                                                        explicit.group(1))]
    iota = re.search(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", rest)
    if iota:
        shape = [int(x) for x in iota.group(1).split(",")]
        ids = np.arange(int(np.prod([int(x) for x in iota.group(2).split(",")])))
        ids = ids.reshape([int(x) for x in iota.group(2).split(",")])
        if iota.group(3):
            ids = ids.transpose([int(x) for x in iota.group(3).split(",")])
        return ids.reshape(shape).tolist()
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", rest)
    if mesh:
        axes = re.findall(r"'([^']+)'=(\d+)", mesh.group(1))
        grouped = re.findall(r"'([^']+)'", mesh.group(2))
        names = [a for a, _ in axes]
        ids = np.arange(int(np.prod([int(n) for _, n in axes]))).reshape(
            [int(n) for _, n in axes])
        order = [i for i, a in enumerate(names) if a not in grouped] + [
            names.index(a) for a in grouped if a in names]
        size = int(np.prod([int(axes[names.index(a)][1]) for a in grouped if a in names]))
        return ids.transpose(order).reshape(-1, size).tolist()
    return None


@dataclasses.dataclass
class Collective:
    """One collective instruction of the compiled program."""

    kind: str
    name: str
    bytes: float  # its result buffer (all-gather: the gathered array), per device
    group_size: int
    runs: int  # executions per step (trip counts of the loops around it)
    op_name: str
    groups: list[list[int]] | None
    dcn: bool = False  # a multi-slice TPU transfer between slices (a megascale send)
    channel: int | None = None  # XLA's channel id: one per collective

    @property
    def wire_bytes(self) -> float:
        """Bytes each device sends per execution with a ring algorithm."""
        n = max(self.group_size, 1)
        share = (n - 1) / n
        return {"all-gather": self.bytes * share, "reduce-scatter": self.bytes * (n - 1),
                "all-reduce": 2 * self.bytes * share, "all-to-all": self.bytes * share,
                "collective-permute": self.bytes}[self.kind]


def collectives(text: str) -> tuple[list[Collective], list[str]]:
    """Every collective of the optimized HLO `text` with its executions per step, and the while
    loops of unknown trip count."""
    computations, entry = parse_computations(text)
    runs, unknown = executions(computations, entry)
    found = []
    for name, instructions in computations.items():
        for inst in instructions:
            kind = _kind(inst.opcode)
            megascale = re.search(r'_xla_megascale_transfer_type="(\w+)"', inst.rest)
            if inst.opcode == "send" and megascale and runs.get(name):
                # Between slices, XLA:TPU sends to the megascale (DCN) runtime; the group is the
                # slices, which the caller knows.
                found.append(Collective(megascale.group(1).lower().replace("_", "-"), inst.name,
                                        inst.bytes, 0, runs[name], inst.op_name, None, dcn=True))
                continue
            if kind is None or not runs.get(name):
                continue
            groups = replica_groups(inst.rest)
            size = len(groups[0]) if groups else 0
            if kind == "collective-permute":
                size = 2
            found.append(Collective(kind, inst.name, inst.bytes, size, runs[name], inst.op_name,
                                    groups, channel=_channel(inst.rest)))
    return _one_per_channel(found), unknown


def _channel(rest: str) -> int | None:
    match = re.search(r"\bchannel_id=(\d+)", rest)
    return int(match.group(1)) if match else None


def _one_per_channel(found: list[Collective]) -> list[Collective]:
    """XLA:TPU splits one collective over several fusions that share its channel id; each
    channel is one collective, counted once (with its most frequent execution)."""
    kept: dict[tuple[str, int], Collective] = {}
    unique = []
    for c in found:
        if c.channel is None:
            unique.append(c)
            continue
        key = (c.kind, c.channel)
        if key not in kept or (c.runs, c.bytes) > (kept[key].runs, kept[key].bytes):
            kept[key] = c
    return unique + list(kept.values())


def largest_buffers(text: str, count: int = 8) -> Iterator[tuple[float, str, str, str]]:
    """(bytes, instruction, opcode, op_name) of the largest arrays the program produces, from
    the entry computation and the loop bodies (fusion internals excluded)."""
    computations, entry = parse_computations(text)
    runs, _ = executions(computations, entry)
    candidates = []
    for name, instructions in computations.items():
        if not runs.get(name) or "fused" in name or "fusion" in name and name != entry:
            continue
        for inst in instructions:
            if inst.opcode in ("parameter", "get-tuple-element", "tuple", "bitcast"):
                continue
            candidates.append((inst.bytes, inst.name, inst.opcode, inst.op_name))
    yield from sorted(candidates, reverse=True)[:count]
