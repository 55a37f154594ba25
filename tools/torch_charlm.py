#!/usr/bin/env python3
"""PyTorch trained with `recur train`'s recipe, for the side-by-side in BENCHMARKS.md.

The same text (the four Shakespeare plays of data/shakespeare, concatenated in recur's order),
vocabulary (the sorted distinct characters), split (the last 5% held out), batching (the text
cut into 32 contiguous streams read 32 characters at a time, the state carried from chunk to
chunk and reset when the streams wrap around), model (embedding 32, one LSTM layer of 192,
a dense softmax at every step), optimizer (Adam 0.02, cosine annealing to a tenth over the
2000 steps, the global gradient norm clipped to 5) and score (bits per character over the
whole held-out text, 32 streams from zero states, the state carried). Prints one JSON line.
Initialisation is PyTorch's own; --embedding-init keras draws the embedding uniform +-0.05.
"""

import argparse
import json
import math
import pathlib
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
PLAYS = ["hamlet", "julius_caesar", "macbeth", "romeo_and_juliet"]


def streams(ids, batch, steps):
    per = len(ids) // batch
    chunks = (per - 1) // steps
    base = torch.arange(batch) * per

    def chunk(k):
        at = base[None, :] + k * steps + torch.arange(steps)[:, None]  # [T, B]
        return ids[at], ids[at + 1]

    return chunks, chunk


class Model(torch.nn.Module):
    def __init__(self, vocab, embed, hidden, layers, embedding_init):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, embed)
        if embedding_init == "keras":
            torch.nn.init.uniform_(self.embed.weight, -0.05, 0.05)
        self.rnn = torch.nn.LSTM(embed, hidden, layers)
        self.out = torch.nn.Linear(hidden, vocab)

    def forward(self, x, state):
        y, state = self.rnn(self.embed(x), state)
        return self.out(y), state


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--valid-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--embedding-init", choices=["pytorch", "keras"], default="pytorch")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    text = "".join((ROOT / "data" / "shakespeare" / f"{n}.txt").read_text("utf-8") for n in PLAYS)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_valid = int(len(ids) * a.valid_fraction)
    train_ids, valid_ids = ids[: len(ids) - n_valid], ids[len(ids) - n_valid :]
    chunks, chunk = streams(train_ids, a.batch, a.seq_len)
    valid_chunks, valid_chunk = streams(valid_ids, a.batch, a.seq_len)

    model = Model(len(chars), a.embed, a.hidden, a.layers, a.embedding_init)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.steps, eta_min=a.lr * 0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    vocab = len(chars)

    start = time.perf_counter()
    state = None
    last = []
    for step in range(1, a.steps + 1):
        k = (step - 1) % chunks
        if k == 0:
            state = None
        x, y = chunk(k)
        logits, state = model(x, state)
        state = tuple(s.detach() for s in state)
        loss = loss_fn(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        sched.step()
        last.append(loss.item())
    seconds = time.perf_counter() - start

    with torch.no_grad():
        state, total = None, 0.0
        for k in range(valid_chunks):
            x, y = valid_chunk(k)
            logits, state = model(x, state)
            total += loss_fn(logits.reshape(-1, vocab), y.reshape(-1)).item()
    bpc = lambda nats: nats / math.log(2)
    print(json.dumps({
        "kind": "charlm", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "seed": a.seed, "hidden": a.hidden, "layers": a.layers, "steps": a.steps,
        "embedding_init": a.embedding_init,
        "valid_bpc": round(bpc(total / valid_chunks), 4),
        "train_bpc_last_100": round(bpc(sum(last[-100:]) / len(last[-100:])), 4),
        "train_seconds": round(seconds, 1),
        "chars_per_second": round(a.steps * a.batch * a.seq_len / seconds),
    }))


if __name__ == "__main__":
    main()
