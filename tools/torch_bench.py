#!/usr/bin/env python3
"""PyTorch's CPU figures for the shapes `recur bench` measures, so both sides of a ratio
come from one run on one machine. Prints one JSON object per line.

    python3 tools/torch_bench.py gemm --shapes 1024x1024x1024,256x256x256 --reps 10
    python3 tools/torch_bench.py rnn --cell lstm --hidden 256 --batch 32 --steps 100

Exits with status 3 when PyTorch is not installed.
"""
import argparse
import json
import statistics
import sys
import time

try:
    import torch
except ImportError:
    print("PyTorch is not installed", file=sys.stderr)
    sys.exit(3)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "reps": reps}


def gemm(args):
    for shape in args.shapes.split(","):
        m, n, k = (int(x) for x in shape.split("x"))
        a = torch.rand(m, k) * 2 - 1
        b = torch.rand(k, n) * 2 - 1
        c = torch.empty(m, n)
        t = timed(lambda: torch.matmul(a, b, out=c), args.warmup, args.reps)
        print(json.dumps({"kind": "gemm", "m": m, "n": n, "k": k, "seconds": t,
                          "gflops": 2 * m * n * k / t["median"] / 1e9}), flush=True)


def rnn(args):
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[args.cell]
    layer = cls(args.input or args.hidden, args.hidden, num_layers=args.layers,
                bidirectional=args.bidirectional).to(args.device)
    x = torch.randn(args.steps, args.batch, args.input or args.hidden, device=args.device, requires_grad=True)

    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        out, _ = layer(x)
        out.sum().backward()

    # Untimed training passes first, as recur's benchmark does: a fresh process runs its
    # first passes slower while the allocator grows its heap.
    for _ in range(max(args.warmup, 1)):
        forward_backward()

    print(json.dumps({"kind": "rnn", "device": args.device, "cell": args.cell, "hidden": args.hidden, "batch": args.batch,
                      "steps": args.steps, "layers": args.layers, "bidirectional": args.bidirectional,
                      "forward": timed(forward, args.warmup, args.reps),
                      "forward_backward": timed(forward_backward, args.warmup, args.reps)}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["gemm", "rnn"])
    p.add_argument("--shapes", default="1024x1024x1024")
    p.add_argument("--cell", default="lstm")
    p.add_argument("--input", type=int, default=0)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 keeps the default")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for cuDNN")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"kind": "meta", "torch": torch.__version__, "threads": torch.get_num_threads()}),
          flush=True)
    {"gemm": gemm, "rnn": rnn}[args.what](args)


if __name__ == "__main__":
    main()
