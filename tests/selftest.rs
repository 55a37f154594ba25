//! `recur selftest` on the adapter the tests run on: one line per check, every kernel family
//! tried, exit status 0 unless a check failed.

mod common;

use rand::Rng;

#[test]
fn selftest_reports_every_kernel_family() {
    if common::gpu().is_none() {
        return;
    }
    let seed: u64 = common::rng("selftest_reports_every_kernel_family").random();
    let (code, out, err) = common::recur(&["selftest", "--seed", &seed.to_string()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("  ")).collect();
    for family in [
        "gemm",
        "recurrent forward rnn-tanh",
        "recurrent backward rnn-relu",
        "recurrent backward lstm",
        "recurrent backward gru ",
        "recurrent backward gru-reset-before",
        "optim",
        "loss",
        "embedding gather",
        "embedding scatter-add",
        "word2vec top-10",
        "word2vec Sampled",
        "word2vec Softmax",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with("pass") && l.contains(family)),
            "no passing check of {family}:\n{out}"
        );
    }
    // Every line is a verdict; none failed.
    assert!(lines.iter().all(|l| {
        let l = l.trim_start();
        l.starts_with("pass") || l.starts_with("skip")
    }));
    let summary = out.lines().last().unwrap_or_default();
    assert!(summary.contains(", 0 failed, "), "{summary}");
}
