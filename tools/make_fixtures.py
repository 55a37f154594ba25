#!/usr/bin/env python3
"""Golden values from PyTorch for recur's recurrent layers.

Writes tests/fixtures/<name>.safetensors, each holding a PyTorch state_dict (weight_ih_l0, ...),
the inputs (input, h0, c0, lengths), the outputs (output, h_n, c_n) and, for the loss
sum(output * grad_output) + sum(h_n * grad_h_n) + sum(c_n * grad_c_n), the gradients under
"grad.<name>". Metadata: cell, batch_first. The inputs and weights are float32 values; PyTorch
computes in float64 from them, and the results are stored as float32.

    python3 tools/make_fixtures.py      # needs torch and safetensors; cargo test does not
"""
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


class GruResetBefore(torch.nn.Module):
    """The classic GRU (Keras reset_after=False), written with autograd ops, as an
    independent reference: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)."""

    def __init__(self, gru):
        super().__init__()
        self.gru = gru

    def forward(self, x, h0):
        g = self.gru
        H = g.hidden_size
        w_ih, w_hh, b_ih, b_hh = g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0
        h = h0[0]
        outs = []
        for t in range(x.shape[0]):
            xw = x[t] @ w_ih.T + b_ih
            hw = h @ w_hh[: 2 * H].T + b_hh[: 2 * H]
            r = torch.sigmoid(xw[:, :H] + hw[:, :H])
            z = torch.sigmoid(xw[:, H : 2 * H] + hw[:, H:])
            n = torch.tanh(xw[:, 2 * H :] + (r * h) @ w_hh[2 * H :].T + b_hh[2 * H :])
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs), h.unsqueeze(0)


def make(name, cell, I, H, B, T, layers=1, bidirectional=False, bias=True, batch_first=False,
         lengths=None, nonlinearity="tanh", seed=0):
    torch.manual_seed(seed)
    D = 2 if bidirectional else 1
    kw = dict(num_layers=layers, bidirectional=bidirectional, bias=bias, batch_first=batch_first)
    if cell == "lstm":
        mod = torch.nn.LSTM(I, H, **kw)
    elif cell in ("gru", "gru-reset-before"):
        mod = torch.nn.GRU(I, H, **kw)
    else:
        mod = torch.nn.RNN(I, H, nonlinearity=nonlinearity, **kw)
    x32 = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    h032 = torch.randn(layers * D, B, H) * 0.5
    c032 = torch.randn(layers * D, B, H) * 0.5
    state32 = {k: v.detach().clone() for k, v in mod.state_dict().items()}

    mod = mod.double()
    x = x32.double().requires_grad_(True)
    h0 = h032.double().requires_grad_(True)
    c0 = c032.double().requires_grad_(True)
    if cell == "gru-reset-before":
        assert layers == 1 and not bidirectional and not batch_first and lengths is None
        out, h_n = GruResetBefore(mod)(x, h0)
        c_n = None
    else:
        inp = x
        if lengths is not None:
            inp = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                                          enforce_sorted=False)
        state = (h0, c0) if cell == "lstm" else h0
        out, st = mod(inp, state)
        if lengths is not None:
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
        h_n, c_n = st if cell == "lstm" else (st, None)

    g_out = torch.randn(out.shape, dtype=torch.float64)
    g_h = torch.randn(h_n.shape, dtype=torch.float64)
    loss = (out * g_out).sum() + (h_n * g_h).sum()
    tensors = {}
    if c_n is not None:
        g_c = torch.randn(c_n.shape, dtype=torch.float64)
        loss = loss + (c_n * g_c).sum()
        tensors["grad_c_n"] = g_c
        tensors["c_n"] = c_n
    params = dict(mod.named_parameters())
    loss.backward()

    tensors.update(state32)
    tensors.update({"input": x32, "h0": h032, "output": out, "h_n": h_n,
                    "grad_output": g_out, "grad_h_n": g_h,
                    "grad.input": x.grad, "grad.h0": h0.grad})
    if cell == "lstm":
        tensors["c0"] = c032
        tensors["grad.c0"] = c0.grad
    if lengths is not None:
        tensors["lengths"] = torch.tensor(lengths, dtype=torch.int64)
    for k, p in params.items():
        tensors["grad." + k] = p.grad
    tensors = {k: (v.detach().float() if v.dtype.is_floating_point else v).contiguous() for k, v in tensors.items()}
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, name + ".safetensors"),
              metadata={"cell": cell, "batch_first": str(batch_first).lower()})
    print("wrote", name)


if __name__ == "__main__":
    make("lstm_2layer_bidir_lengths", "lstm", I=3, H=4, B=3, T=5, layers=2, bidirectional=True,
         lengths=[5, 2, 4], seed=1)
    make("gru_batch_first", "gru", I=4, H=3, B=2, T=6, batch_first=True, seed=2)
    make("gru_bidir_lengths", "gru", I=2, H=5, B=4, T=4, bidirectional=True, lengths=[1, 4, 3, 2], seed=3)
    make("rnn_tanh_2layer_nobias", "rnn-tanh", I=3, H=4, B=2, T=5, layers=2, bias=False, seed=4)
    make("rnn_relu", "rnn-relu", I=3, H=5, B=3, T=4, nonlinearity="relu", seed=5)
    make("lstm_lengths_batch_first", "lstm", I=5, H=6, B=4, T=7, batch_first=True, lengths=[7, 3, 1, 5], seed=6)
    make("gru_reset_before", "gru-reset-before", I=3, H=4, B=2, T=5, seed=7)
