#!/usr/bin/env python3
"""gensim's word2vec training speed on a corpus, with the settings `recur bench word2vec`
uses, so both sides of a ratio come from one run on one machine. Prints one JSON object per
line: a `meta` line, then a `word2vec` line with the median of the runs.

    python3 tools/gensim_bench.py --corpus text.txt --sg 1 --negative 5 --size 100 \
        --window 5 --min-count 5 --sample 1e-3 --epochs 5 --threads 2 --reps 3

Words per second count the corpus words in the vocabulary before subsampling (as recur's
`words_per_sec`); `effective_words_per_sec` those left after subsampling. The vocabulary
scan is not timed. Exits with status 3 when gensim is not installed.
"""
import argparse
import json
import statistics
import sys
import time

try:
    import gensim
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence
except ImportError:
    print("gensim is not installed", file=sys.stderr)
    sys.exit(3)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", required=True)
    p.add_argument("--sg", type=int, default=1)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--hs", type=int, default=0)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.025)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reps", type=int, default=1)
    a = p.parse_args()
    model = Word2Vec(
        vector_size=a.size, window=a.window, min_count=a.min_count, sample=a.sample,
        negative=a.negative, hs=a.hs, sg=a.sg, workers=a.threads, epochs=a.epochs,
        alpha=a.alpha, seed=a.seed,
    )
    model.build_vocab(LineSentence(a.corpus))
    words = a.epochs * int(sum(model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key))
    print(json.dumps({"kind": "meta", "gensim": gensim.__version__, "threads": a.threads,
                      "fast_version": gensim.models.word2vec.FAST_VERSION}))
    seconds, effective = [], 0
    for _ in range(max(1, a.reps)):
        start = time.perf_counter()
        effective, _raw = model.train(LineSentence(a.corpus), total_examples=model.corpus_count,
                                      epochs=a.epochs)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    print(json.dumps({
        "kind": "word2vec", "vocab_size": len(model.wv), "words": words,
        "seconds": median, "words_per_sec": words / median,
        "effective_words_per_sec": effective / median,
    }))


if __name__ == "__main__":
    main()
