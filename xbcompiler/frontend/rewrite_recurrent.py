"""``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` rewritten into crossbar layers and host gates, unrolled over time.

Each layer and direction becomes a :class:`_Direction` holding two ``nn.Linear`` layers, named after
torch's parameters: ``ih`` (``weight_ih_l{k}``, ``bias_ih_l{k}``) and ``hh`` (``weight_hh_l{k}``,
``bias_hh_l{k}``), plus ``hr`` (``weight_hr_l{k}``) for an LSTM with ``proj_size``. The module path is
``<user's path>.l{k}[_reverse].ih``. The input projection of all time steps is one call of ``ih`` (one
crossbar layer); the recurrence is unrolled in Python over the example's sequence length, so ``hh``
(and ``hr``) is called once per step, and every call is a crossbar layer of its own (docs/operators.md,
"Recurrent and attention layers"). Without an initial state the first step's hidden projection is
``bias_hh`` alone, so ``hh`` is called ``T - 1`` times. Gates (``sigmoid``, ``tanh``, ``relu``), their
products and sums, ``chunk``, ``unbind``, ``stack`` and ``cat`` run on the host.

The sequence length must be a Python number when the loop is unrolled: ``torch.export`` knows it from
the example input, symbolic tracing (``--frontend fx``) does not, and is refused (XB101).
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn.utils.rnn import PackedSequence

from ..diagnostics import CompileError

#: The ``mode`` values of torch's recurrent modules that :class:`UnrolledRecurrent` computes.
_MODES = frozenset({"RNN_TANH", "RNN_RELU", "LSTM", "GRU"})


class _Direction(nn.Module):
    """One layer in one direction: ``ih`` over all steps, ``hh`` (and ``hr``) once per step."""

    def __init__(self, rnn: nn.RNNBase, suffix: str):
        super().__init__()
        self.ih = linear_copy(getattr(rnn, f"weight_ih{suffix}"), getattr(rnn, f"bias_ih{suffix}", None))
        self.hh = linear_copy(getattr(rnn, f"weight_hh{suffix}"), getattr(rnn, f"bias_hh{suffix}", None))
        self.hr = linear_copy(getattr(rnn, f"weight_hr{suffix}"), None) if getattr(rnn, "proj_size", 0) else None

    def hidden(self, h: torch.Tensor | None) -> torch.Tensor | None:
        """``h @ W_hh^T + b_hh``; for the zero state ``b_hh`` alone (None without a bias)."""
        if h is not None:
            return self.hh(h)
        return self.hh.bias


def linear_copy(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of ``weight`` ``[out, in]`` and ``bias``."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                      device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


class NeedsExport(Exception):
    """What a rewrite cannot express under symbolic tracing; the fx front end reports it as XB101."""

    def __init__(self, what: str):
        super().__init__(f"{what}: compile with --frontend export (the default 'auto' uses it)")


def traced_path(proxy: fx.Proxy) -> str:
    """`` 'path'`` of the module whose forward symbolic tracing is in (from the tracer's module stack)."""
    stack = getattr(proxy.tracer, "module_stack", None)
    return f" '{next(reversed(stack.values()))[0]}'" if stack else ""


def _plus(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return a if b is None else a + b


class UnrolledRecurrent(nn.Module):
    """An exact equivalent of an ``nn.RNN``/``nn.LSTM``/``nn.GRU`` in eval mode, unrolled over time.

    ``forward(input, hx=None)`` returns ``(output, h_n)``, or ``(output, (h_n, c_n))`` for an LSTM, as
    torch does; batched (``[T, B, in]`` / ``[B, T, in]``) and unbatched (``[T, in]``) inputs.
    """

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.kind = type(rnn).__name__
        self.mode = rnn.mode
        self.num_layers, self.bidirectional, self.batch_first = rnn.num_layers, rnn.bidirectional, rnn.batch_first
        self.directions = 2 if rnn.bidirectional else 1
        for layer in range(rnn.num_layers):
            for reverse in range(self.directions):
                suffix = f"_l{layer}" + ("_reverse" if reverse else "")
                self.add_module(suffix[1:], _Direction(rnn, suffix))

    def forward(self, input, hx=None):
        if isinstance(input, fx.Proxy):
            raise NeedsExport(f"nn.{self.kind}{traced_path(input)} is unrolled over the example input's "
                              "sequence length, which symbolic tracing does not know")
        if isinstance(input, PackedSequence):
            raise CompileError("XB103", f"nn.{self.kind} on a PackedSequence is not supported",
                               hint="pass a padded tensor (and mask or slice the padded steps after the layer)")
        # Batch first inside ([B, T, in], or [T, in] unbatched): the crossbar layers then see the batch as
        # their leading dimension, and the netlist runs on any batch size.
        seq_first = not self.batch_first and input.dim() == 3
        x = input.transpose(0, 1) if seq_first else input
        h0, c0 = (hx if self.mode == "LSTM" else (hx, None)) if hx is not None else (None, None)
        final_h, final_c = [], []
        for layer in range(self.num_layers):
            outputs = []
            for reverse in range(self.directions):
                k = layer * self.directions + reverse
                cell: _Direction = getattr(self, f"l{layer}" + ("_reverse" if reverse else ""))
                steps = torch.unbind(cell.ih(x), -2)  # the input projection of every step at once
                h = None if h0 is None else h0[k]
                c = None if c0 is None else c0[k]
                ys: list = [None] * len(steps)
                for t in (reversed(range(len(steps))) if reverse else range(len(steps))):
                    h, c = self._step(cell, steps[t], h, c)
                    ys[t] = h
                outputs.append(torch.stack(ys, -2))
                final_h.append(h)
                final_c.append(c)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
        output = x.transpose(0, 1) if seq_first else x
        h_n = torch.stack(final_h, 0)
        return (output, (h_n, torch.stack(final_c, 0))) if self.mode == "LSTM" else (output, h_n)

    def _step(self, cell: _Direction, x: torch.Tensor, h, c):
        """One time step: ``x`` is this step's input projection, ``h``/``c`` the state (None: zero)."""
        hidden = cell.hidden(h)
        if self.mode == "LSTM":
            i, f, g, o = _plus(x, hidden).chunk(4, -1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = i * g if c is None else f * c + i * g
            h = o * torch.tanh(c)
            return (h if cell.hr is None else cell.hr(h)), c
        if self.mode == "GRU":
            xr, xz, xn = x.chunk(3, -1)
            hr, hz, hn = hidden.chunk(3, -1) if hidden is not None else (None, None, None)
            r, z = torch.sigmoid(_plus(xr, hr)), torch.sigmoid(_plus(xz, hz))
            n = torch.tanh(xn if hn is None else xn + hn * r)
            return (n - n * z if h is None else (h - n) * z + n), None
        pre = _plus(x, hidden)
        return (torch.tanh(pre) if self.mode == "RNN_TANH" else torch.relu(pre)), None


def unroll(rnn: nn.RNNBase) -> UnrolledRecurrent:
    """The rewrite of one recurrent module (XB103 for what it cannot express)."""
    if rnn.mode not in _MODES:
        raise CompileError("XB103", f"recurrent mode '{rnn.mode}' of {type(rnn).__name__} is not supported")
    return UnrolledRecurrent(rnn)


#: Recurrent module types and their rewrite (merged into :data:`.rewrites.REWRITES`).
RECURRENT_REWRITES = {nn.RNN: unroll, nn.LSTM: unroll, nn.GRU: unroll}
