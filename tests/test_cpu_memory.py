"""Freed CPU memory kept for reuse (`ditkit.cpu_memory`): the page faults it saves, its modes, its errors.

Each measurement runs in a fresh interpreter: the setting lasts for the whole process.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from ditkit.cli.main import main
from ditkit.cpu_memory import CPU_MALLOC_ENV, configure_cpu_malloc, cpu_malloc_mode
from ditkit.errors import UserError

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# Allocates and frees a 64 MiB tensor, as an op's activation is, and prints the page faults of ten
# repeats after twenty (each new mapping of 64 MiB costs 16,384 faults of 4 KiB). The heap settles
# within the first repeats (measured: after 8; the freed blocks are just short of the aligned size).
_FAULTS = """
import resource, sys, torch
from ditkit.cpu_memory import configure_cpu_malloc
print(configure_cpu_malloc(sys.argv[1]))
def alloc():
    torch.empty(16 << 20).fill_(1.0)
for _ in range(20):
    alloc()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    alloc()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True, env=env
    )
    held, faults = done.stdout.split()
    return held, int(faults)


@glibc_only
def test_kept_memory_is_reused_without_new_page_faults():
    """glibc's default maps each large block afresh (a fault per page); "keep" reuses the freed one."""
    held, system_faults = _faults("system")
    assert held == "system" and system_faults > 10 * 16384 // 2
    held, keep_faults = _faults("keep")
    assert held == "keep" and keep_faults < 1000


def test_a_mode_not_in_the_list_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv(CPU_MALLOC_ENV, "jemalloc")
    with pytest.raises(
        UserError, match="DITKIT_CPU_MALLOC='jemalloc' is not a mode; set it to one of keep, system"
    ):
        configure_cpu_malloc()
    assert main(["models"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: DITKIT_CPU_MALLOC='jemalloc' is not a mode; set it to one of keep, system"
    ]


def test_system_leaves_glibc_alone():
    """Run in a fresh interpreter so that no earlier "keep" in this process answers instead."""
    code = (
        "from ditkit.cpu_memory import configure_cpu_malloc, cpu_malloc_mode\n"
        "print(cpu_malloc_mode(), configure_cpu_malloc('system'), cpu_malloc_mode())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["system", "system", "system"]


@glibc_only
def test_the_cli_keeps_freed_memory_and_the_demo_report_says_so(monkeypatch):
    monkeypatch.delenv(CPU_MALLOC_ENV, raising=False)
    assert main(["models"]) == 0
    assert cpu_malloc_mode() == "keep"
    import torch

    from ditkit.demo.report import _machine, describe_machine

    machine = describe_machine(torch.device("cpu"))
    assert machine["cpu_malloc"] == "keep" and "freed CPU memory: keep" in _machine(machine)
