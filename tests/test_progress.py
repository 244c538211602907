"""``xbcompiler.progress``: plain whole lines when stderr is not a terminal (training, sweeps), a bar on one."""

from __future__ import annotations

import io
from types import SimpleNamespace

import torch
from torch import nn

from xbcompiler.progress import clock, progress
from xbcompiler.prune import column_groups, prune_lgd


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_carry_the_count_and_the_info_uncut():
    stream = io.StringIO()
    info = " ".join(["ep 3 finetune loss 0.1234 acc 97.5 sparsity 0.500 and a long tail"] * 3)
    with progress("LGD/RPP", 255, interval_s=0.0, stream=stream) as advance:
        for i in range(255):
            advance(info=info if i == 254 else None)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 255  # interval 0: a line per step, none repeated at the end
    assert all(line.startswith("LGD/RPP: ") and "\x1b" not in line and "…" not in line for line in lines)
    assert lines[-1].startswith("LGD/RPP: 255/255 (100 %), 0:00:00 elapsed") and lines[-1].endswith("  " + info)
    assert "1/255 (0 %)" in lines[0] and "left" in lines[0]  # the time left while under way


def test_plain_lines_are_periodic_with_one_final_line():
    stream = io.StringIO()
    with progress("sweep", 10, interval_s=3600.0, stream=stream) as advance:
        for done in range(1, 11):
            advance(completed=done, info=f"failed 0, running {10 - done}")
    assert stream.getvalue().splitlines() == ["sweep: 10/10 (100 %), 0:00:00 elapsed  failed 0, running 0"]


def test_unknown_total_and_disabled_progress():
    stream = io.StringIO()
    with progress("scan", None, stream=stream) as advance:
        advance(4)
        advance(3)
    assert stream.getvalue() == "scan: 7, 0:00:00 elapsed\n"
    quiet = io.StringIO()
    with progress("scan", 3, enabled=False, stream=quiet) as advance:
        advance(3, info="x")
    assert quiet.getvalue() == ""


def test_a_terminal_gets_the_rich_bar():
    stream = Terminal()
    with progress("LGD/RPP", 4, stream=stream) as advance:
        advance(4, info="ep 0")
    text = stream.getvalue()
    assert "LGD/RPP" in text and "4/4" in text and "\x1b[" in text  # drawn with terminal control codes


def test_clock():
    assert clock(0) == "0:00:00" and clock(61.9) == "0:01:01" and clock(3 * 3600 + 125) == "3:02:05"


def test_pruning_prints_plain_lines_off_a_terminal(capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4))
    groups = [column_groups("0.weight", model[0].weight.shape, kin=3, kout=2, n_w=1)]
    x, y = torch.randn(32, 6), torch.randint(0, 4, (32,))
    loader = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]
    prune_lgd(model, groups, {"0.weight": 0.5}, loader, relax_epochs=1, finetune_epochs=1, lr=0.05,
              evaluate=lambda m: 50.0, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("LGD/RPP: 8/8 (100 %), ")
    assert err[0].endswith("ep 1 finetune loss " + err[0].split("loss ")[1].split()[0] + " acc 50 sparsity 0.500")


def test_sweep_progress_prints_plain_lines_off_a_terminal(capsys):
    from xbcompiler.cli.sweep import _progress

    with _progress(True) as update:
        for done in range(6):
            update(SimpleNamespace(total=5 + 1, done=done, failed=done // 3, running=6 - done, skipped=0,
                                   eta_s=None if done == 0 else 2.0 * (6 - done)))
    err = capsys.readouterr().err.splitlines()
    assert err == ["sweep: 5/6 (83 %), 0:00:00 elapsed, 0:00:00 left  failed 1, running 1, skipped 0, ETA 0:00:02"]
    with _progress(False) as update:
        assert update is None
