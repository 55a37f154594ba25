//! `recur train` and `recur generate` from the command line: a short run on a user's text,
//! sampling, and bad input (a message and exit status 1, the checkpoint untouched).

mod common;

use std::path::PathBuf;

use common::recur;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("recur-cli-train-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn train_and_generate_on_a_users_text_then_reject_bad_input() {
    let d = dir();
    let text = d.join("text.txt");
    std::fs::write(
        &text,
        "to be or not to be, that is the question. ".repeat(20),
    )
    .unwrap();
    let out = d.join("run");
    let (t, o) = (text.to_str().unwrap(), out.to_str().unwrap());
    let small = [
        "--backend",
        "cpu",
        "--hidden",
        "8",
        "--embed",
        "4",
        "--batch",
        "4",
        "--seq-len",
        "8",
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--sample",
        "30",
    ];
    let mut args = vec!["train", "--text", t, "--out", o];
    args.extend(small);
    let (code, stdout, stderr) = recur(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("validation"), "{stdout}");
    let ckpt = out.join("model.safetensors");
    assert_eq!(
        &std::fs::read(out.join("loss.png")).unwrap()[..4],
        b"\x89PNG"
    );
    let good = std::fs::read(&ckpt).unwrap();

    let c = ckpt.to_str().unwrap();
    let (code, stdout, stderr) = recur(&[
        "generate",
        "--checkpoint",
        c,
        "--prime",
        "to be",
        "--length",
        "20",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("to be"), "{stdout}");

    let empty = d.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let binary = d.join("binary.txt");
    std::fs::write(&binary, b"\xff\xfe\x00abc").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--text", empty.to_str().unwrap()], "empty"),
        (vec!["--text", binary.to_str().unwrap()], "not UTF-8"),
        (vec!["--text", t, "--lr", "0"], "--lr: learning rate lr = 0"),
        (vec!["--text", t, "--lr", "NaN"], "--lr: Adam lr = NaN"),
        (vec!["--text", t, "--clip=-1"], "--clip: clip max_norm = -1"),
        (
            vec!["--text", t, "--clip", "inf"],
            "--clip: clip max_norm = inf",
        ),
        (vec!["--text", t, "--batch", "1000"], "too few"),
        (
            vec!["--text", t, "--hidden", "0"],
            "--hidden: hidden size 0",
        ),
        (
            vec!["--text", t, "--embed", "0"],
            "--embed: embedding size 0",
        ),
        (vec!["--text", t, "--layers", "0"], "--layers: layers 0"),
        (vec!["--text", t, "--batch", "0"], "--batch: batch 0"),
        (
            vec!["--text", t, "--seq-len", "0"],
            "--seq-len: sequence length 0",
        ),
        (vec!["--text", t, "--steps", "0"], "--steps: train_steps 0"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["train", "--out", o, "--backend", "cpu"];
        args.extend(extra);
        let (code, _, stderr) = recur(&args);
        assert_eq!(code, 1, "{want}: {stderr}");
        assert!(stderr.contains(want), "{want}: {stderr}");
        assert_eq!(
            std::fs::read(&ckpt).unwrap(),
            good,
            "{want}: checkpoint changed"
        );
    }
    // A finished run has nothing left to resume.
    let mut again = args.clone();
    again.push("--resume");
    let (code, _, stderr) = recur(&again);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("nothing left to train"), "{stderr}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), good);

    let (code, _, stderr) = recur(&["generate", "--checkpoint", c, "--temperature", "0"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("temperature"), "{stderr}");
    let (code, _, stderr) = recur(&["generate", "--checkpoint", t]);
    assert_eq!(code, 1);
    assert!(stderr.contains("safetensors"), "{stderr}");
    std::fs::remove_dir_all(&d).ok();
}
