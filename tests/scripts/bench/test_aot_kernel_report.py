"""scripts/bench/aot_kernel_report.py: the tiled matmul kernel compiled ahead of time for sm_90 as
the JIT specializes it (no GPU needed), with ptxas's resource report."""
import importlib.util
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.bench,   # the measurement tools' group: pytest -m bench
              pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                 reason="triton is not installed")]


def report(*args, prefix="| 64x"):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "scripts/bench/aot_kernel_report.py", *args],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [line.strip("|").split("|") for line in proc.stdout.splitlines()
            if line.startswith(prefix)]
    return [[cell.strip() for cell in row] for row in rows]


def test_kernel_is_pipelined_as_the_jit_compiles_it():
    """64x64x64 tiles, 3 stages, both operands row-major: the K loop is software-pipelined
    (3 stages of the two 8 KiB operand tiles in shared memory, async copies, wgmma), within
    the register file, no spills. A bare compile without the JIT's specializations gives
    scalar loads and one stage: this fails if they are lost."""
    rows = report("--plan", "64x64x64:4:3:rr")
    assert len(rows) == 1
    shared_kib, cp_async, wgmma, registers, spilled = map(int, rows[0][1:6])
    assert shared_kib == 3 * 2 * 64 * 64 * 2 // 1024
    assert cp_async > 0 and wgmma > 0
    assert 0 < registers <= 255 and spilled == 0


def test_a_malformed_plan_is_refused():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "scripts/bench/aot_kernel_report.py", "--plan", "64x64:4"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1 and "is not MxNxK:warps:stages:layout" in proc.stderr


def test_wide_split_k_kernel_fits_the_register_file():
    """The wide split-K plan the tuner offers (128x128x64 as 192x192 tiles, 8 warps, 3
    stages, GPT-2's dW layout): four accumulators and their operand tiles within 255
    registers, no spills, the wgmma pipeline not serialized (no C7515), and 3 stages of the
    wide tile's operands in shared memory (3 x 384 x 64 x 2 bytes)."""
    rows = report("--wide", "--plan", "128x128x64:8:3:cr", prefix="| 128x128x64")
    assert len(rows) == 1
    cells = rows[0]
    shared_kib, cp_async, wgmma, registers, spilled = map(int, cells[1:6])
    assert shared_kib == 3 * 384 * 64 * 2 // 1024
    assert cp_async > 0 and wgmma > 0
    assert registers <= 255 and spilled == 0 and "C7515" not in cells[6]
