"""Interruption (issue 14): Ctrl-C and SIGTERM anywhere exit 130 with one line, and leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

SLOW = '''
import time
from pathlib import Path
import torch
from torch import nn

class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        Path("tracing").touch()  # the front end is running the model
        time.sleep(60)
        return self.fc(x)

def slow():
    return Slow().eval()
'''


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.slow
def test_an_interrupted_compile_exits_130_and_writes_nothing(tmp_path, sig):
    (tmp_path / "slow.py").write_text(SLOW)
    proc = subprocess.Popen([sys.executable, "-m", "xbcompiler.cli", "compile", "slow.py:slow", "--input-shape", "1,8",
                             "--target", "tiny", "-o", "out"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while not (tmp_path / "tracing").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "xbc: compile interrupted" and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow.py", "tracing"]


def test_ctrl_c_reaches_python_after_a_cp_sat_solve():
    """CP-SAT would keep its own SIGINT handler after a solve (the default pipeline solves one): Ctrl-C
    must still raise KeyboardInterrupt, so the CLI can clean up and exit 130 (xbcompiler/cpsat.py)."""
    code = ("import os, signal, time, torch, xbcompiler as xb\nfrom torch import nn\n"
            "cm = xb.compile(nn.Sequential(nn.Linear(4, 4)), (torch.randn(1, 4),), 'tiny')\n"
            "assert cm.report['map-budgeted']['method'] == 'cp-sat', cm.report['map-budgeted']\n"
            "try:\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(30)\n"
            "except KeyboardInterrupt:\n    print('interrupted')\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "interrupted", done.stderr
