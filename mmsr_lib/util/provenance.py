"""Which machine computed a result: stored with every run and every benchmark.

The same configuration and seed give bit-identical numbers on one machine, but not always on
another: CPU kernels are chosen by the instruction set (AVX2 vs AVX-512), and some sum in an
order that depends on the thread count. On one machine, three epochs of ID NextItNet give another
loss from the first epoch on under ``ATEN_CPU_CAPABILITY=avx2`` than under the default AVX-512,
and bit-identical ones run twice; re-trained on another VM, Table IV's GRU4Rec and NextItNet rows
stopped at other best epochs (docs/results_cpu.md). A stored run that names its
machine lets a reader tell a code change from a machine change when two runs of one hash differ.
A run resumed on another machine records the one that finished and evaluated it.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where `platform.processor()` is
    empty), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Python, NumPy and PyTorch versions, the CPU, the instruction set PyTorch's CPU kernels
    dispatch to, cores and PyTorch threads, and the GPU if there is one."""
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
