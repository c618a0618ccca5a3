"""What a job's ``InstanceType`` gives it: vCPUs and memory, as SageMaker publishes them, capped by this machine.

Known types come from a small table of SageMaker's published sizes. Unknown ones follow the naming rule
of the families (``large`` = 2 vCPUs, ``xlarge`` = 4, ``Nxlarge`` = 4N) with the family's memory per
vCPU; a type that is not ``ml.<family>.<size>`` (``local``) gets the whole machine. Nothing is ever set
above what this machine has.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

GIB = 1 << 30

# instance type -> (vCPUs, memory GiB), from SageMaker's published sizes (data, kept beside this module).
KNOWN: dict[str, tuple[int, float]] = {
    name: (int(cpus), float(gib))
    for name, (cpus, gib) in json.loads((Path(__file__).with_name("instance_sizes.json")).read_text())[
        "sizes"
    ].items()
}
# family -> memory GiB per vCPU, for sizes the table does not list.
_PER_VCPU = {"t3": 4, "m5": 4, "m6i": 4, "m7i": 4, "c5": 2, "c6i": 2, "c7i": 2, "r5": 8, "r6i": 8}
_DEFAULT_PER_VCPU = 4
_TYPE = re.compile(r"^ml\.([a-z0-9-]+)\.(?:(\d*)xlarge|(large|medium|small))$")
_SMALL = {"large": 2, "medium": 2, "small": 2}


@dataclass(frozen=True)
class Limits:
    """What one instance may use on this machine: ``cpus`` CPU ids and ``memory`` bytes."""

    instance_type: str
    cpus: tuple[int, ...]
    memory: int

    def describe(self) -> str:
        return f"{self.instance_type}: {len(self.cpus)} CPU(s), {self.memory / GIB:.1f} GiB memory"


def published(instance_type: str) -> tuple[int, float] | None:
    """``(vCPUs, memory GiB)`` for ``instance_type``, or None when it names no SageMaker size."""
    if instance_type in KNOWN:
        return KNOWN[instance_type]
    m = _TYPE.match(instance_type)
    if not m:
        return None
    family, mult, small = m.groups()
    vcpus = _SMALL[small] if small else 4 * int(mult or 1)
    return vcpus, float(vcpus * _PER_VCPU.get(family, _DEFAULT_PER_VCPU))


def machine_memory() -> int:
    """This machine's memory in bytes (its cgroup's limit, where lower)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value.isdigit() and 0 < int(value) < total:
            total = int(value)
    return total


def machine_cpus() -> tuple[int, ...]:
    return tuple(sorted(os.sched_getaffinity(0)))


def limits_for(instance_type: str | None) -> Limits | None:
    """The instance's share of this machine, or None for no type / ``local`` (the whole machine)."""
    if not instance_type:
        return None
    size = published(instance_type)
    if size is None:
        return None
    vcpus, gib = size
    cpus = machine_cpus()
    return Limits(instance_type, cpus[: max(1, min(vcpus, len(cpus)))], min(int(gib * GIB), machine_memory()))


def cpu_count(instance_type: str | None) -> int:
    """The CPUs a job of ``instance_type`` gets here (``SM_NUM_CPUS``)."""
    limits = limits_for(instance_type)
    return len(limits.cpus) if limits else len(machine_cpus()) or 1
