//! Data-parallel training under MPI (`cargo test --release --features mpi --test
//! distributed`; needs `mpirun` on the PATH, as `.ci/run` installs it): N ranks of `recur`
//! (or of `examples/distributed.rs`) against one process with the same global batch. Without
//! the `mpi` feature only the error `--distributed` gives is checked.

mod common;

#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_without_the_feature_says_how_to_build_it() {
    use common::recur;
    for cmd in [
        vec!["train", "--distributed", "--steps", "1"],
        vec!["fit", "--distributed", "--train", "x", "--test", "y"],
        vec!["word2vec", "--distributed", "--corpus", "x", "--out", "y"],
    ] {
        let (code, _, stderr) = recur(&cmd);
        assert_eq!(code, 1, "{cmd:?}: {stderr}");
        assert!(
            stderr.contains("--features mpi") && stderr.contains("openmpi-bin"),
            "{cmd:?}: {stderr}"
        );
    }
}

#[cfg(feature = "mpi")]
mod mpi {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Instant;

    use recur::apps::charlm::{self, CharLmOptions};
    use recur::train::Checkpoint;
    use recur::Backend;

    use super::common;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("recur-mpi-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Runs `program args` on `np` ranks (one CPU thread each); fails the test on a non-zero
    /// exit unless `may_fail`. Returns stdout and stderr.
    fn mpirun(np: usize, program: &Path, args: &[&str], may_fail: bool) -> (String, String) {
        let started = Instant::now();
        let out = Command::new("mpirun")
            .args([
                "--allow-run-as-root",
                "--oversubscribe",
                "-np",
                &np.to_string(),
            ])
            .arg(program)
            .args(args)
            .env("RAYON_NUM_THREADS", "1")
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .expect("mpirun (install openmpi-bin)");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        eprintln!(
            "mpirun -np {np} {} {}: {:.1} s",
            program.file_name().unwrap().to_string_lossy(),
            args.join(" "),
            started.elapsed().as_secs_f64()
        );
        assert!(
            may_fail || out.status.success(),
            "mpirun -np {np} {args:?} failed:\n{stdout}\n{stderr}"
        );
        (stdout, stderr)
    }

    fn recur_bin() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_recur"))
    }

    /// `examples/distributed.rs`, built by `cargo test` beside the test binaries.
    fn example_bin() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let p = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples/distributed");
        assert!(p.exists(), "{} is not built", p.display());
        p
    }

    /// ||a - b|| / ||b||.
    fn rel(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (d / n.max(1e-30)).sqrt()
    }

    /// Asserts two checkpoints hold the same weights within 1e-5 relative, and returns the
    /// worst.
    fn assert_same_weights(a: &Checkpoint, b: &Checkpoint, what: &str) -> f64 {
        assert_eq!(a.step, b.step, "{what}: steps");
        let mut worst: f64 = 0.0;
        for (name, t) in &b.params {
            let e = rel(&a.params[name].data, &t.data);
            assert!(e < 1e-5, "{what}: {name} differs by {e:e}");
            worst = worst.max(e);
        }
        worst
    }

    /// The training losses of a `recur train` checkpoint's history.
    fn losses(c: &Checkpoint) -> Vec<(u64, f32)> {
        let h: charlm::History = serde_json::from_str(&c.meta["history"]).unwrap();
        h.train
    }

    fn assert_same_losses(a: &[(u64, f32)], b: &[(u64, f32)], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for ((sa, la), (sb, lb)) in a.iter().zip(b) {
            assert_eq!(sa, sb);
            let e = ((la - lb) / lb).abs();
            assert!(e < 1e-5, "{what}: step {sa}: loss {la} vs {lb}");
        }
    }

    /// A short text (the start of Hamlet) for the language model.
    fn text(dir: &Path) -> PathBuf {
        let hamlet = include_str!("../data/shakespeare/hamlet.txt");
        let cut = hamlet
            .char_indices()
            .nth(6000)
            .map_or(hamlet.len(), |(i, _)| i);
        let p = dir.join("text.txt");
        std::fs::write(&p, &hamlet[..cut]).unwrap();
        p
    }

    const LM_ARGS: [&str; 14] = [
        "--hidden",
        "16",
        "--embed",
        "8",
        "--seq-len",
        "8",
        "--steps",
        "12",
        "--eval-every",
        "4",
        "--sample",
        "0",
        "--seed",
        "7",
    ];

    /// `recur train` on `np` ranks (0: one process without MPI) with a global batch of
    /// `batch`: its checkpoint.
    fn train_lm(np: usize, dir: &Path, backend: &str, batch: usize) -> Checkpoint {
        let out = dir.join(format!("lm-{backend}-{np}"));
        let text = text(dir);
        let b = batch.to_string();
        let mut args = vec![
            "train",
            "--text",
            text.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--backend",
            backend,
            "--batch",
            &b,
        ];
        args.extend(LM_ARGS);
        if np == 0 {
            let (code, _, stderr) = common::recur(&args);
            assert_eq!(code, 0, "{stderr}");
        } else {
            args.push("--distributed");
            mpirun(np, &recur_bin(), &args, false);
        }
        Checkpoint::load(&out.join("model.safetensors")).unwrap()
    }

    fn lm_equivalence(backend: &str) {
        let dir = tmp(&format!("lm-{backend}"));
        // 2 ranks x 2 streams against 1 process x 4 streams.
        let one = train_lm(0, &dir, backend, 4);
        let two = train_lm(2, &dir, backend, 4);
        let worst = assert_same_weights(&two, &one, &format!("{backend}: 2 ranks"));
        assert_same_losses(&losses(&two), &losses(&one), backend);
        eprintln!("{backend}: 2 ranks against 1 process: weights within {worst:e}");
        let (a, b) = (&two.state["state.h"], &one.state["state.h"]);
        assert_eq!(
            a.shape, b.shape,
            "the checkpoint holds every rank's streams"
        );
        assert!(rel(&a.data, &b.data) < 1e-5);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn language_model_on_two_ranks_matches_one_process_cpu() {
        lm_equivalence("cpu");
    }

    #[test]
    fn language_model_on_two_ranks_matches_one_process_gpu() {
        if common::gpu().is_none() {
            return;
        }
        lm_equivalence("gpu");
    }

    #[test]
    fn three_ranks_split_four_streams_unevenly_and_five_are_refused() {
        let dir = tmp("three");
        let one = train_lm(0, &dir, "cpu", 4);
        // 4 streams over 3 ranks: 1 + 1 + 2, the gradients weighed by each rank's rows.
        let three = train_lm(3, &dir, "cpu", 4);
        assert_same_weights(&three, &one, "3 ranks");
        assert_same_losses(&losses(&three), &losses(&one), "3 ranks");
        let text = text(&dir);
        let out = dir.join("five");
        let mut args = vec![
            "train",
            "--text",
            text.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--backend",
            "cpu",
            "--batch",
            "4",
            "--distributed",
        ];
        args.extend(LM_ARGS);
        let (_, stderr) = mpirun(5, &recur_bin(), &args, true);
        assert!(
            stderr.contains("4 streams (--batch) cannot be split among 5 ranks"),
            "{stderr}"
        );
        assert!(!out.join("model.safetensors").exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_two_rank_checkpoint_resumes_in_one_process() {
        let dir = tmp("resume");
        let opts = CharLmOptions {
            hidden: 12,
            embed: 6,
            batch: 4,
            seq_len: 6,
            train_steps: 12,
            eval_every: 3,
            valid_fraction: 0.1,
            ..CharLmOptions::default()
        };
        let opts_path = dir.join("options.json");
        std::fs::write(&opts_path, serde_json::to_string(&opts).unwrap()).unwrap();
        let text_path = text(&dir);
        let text = std::fs::read_to_string(&text_path).unwrap();
        mpirun(
            2,
            &example_bin(),
            &[
                "lm",
                opts_path.to_str().unwrap(),
                text_path.to_str().unwrap(),
                dir.to_str().unwrap(),
                "cpu",
                "6",
            ],
            false,
        );
        let kept = Checkpoint::load(&dir.join("kept.safetensors")).unwrap();
        assert_eq!(kept.step, 6);
        assert_eq!(kept.state["state.h"].shape, vec![1, 4, 12]);
        let two = Checkpoint::load(&dir.join("model.safetensors")).unwrap();
        // The rest of the run in one process, from the 2-rank checkpoint.
        let resumed = dir.join("resumed.safetensors");
        charlm::resume(&text, &opts, &resumed, &Backend::Cpu, &kept, |_| {}).unwrap();
        let resumed = Checkpoint::load(&resumed).unwrap();
        assert_same_weights(&resumed, &two, "resumed in 1 process");
        assert_same_losses(&losses(&resumed), &losses(&two), "resumed");
        // And the whole run in one process.
        let whole = dir.join("whole.safetensors");
        charlm::train(&text, &opts, &whole, &Backend::Cpu, |_| {}).unwrap();
        assert_same_weights(&Checkpoint::load(&whole).unwrap(), &two, "1 process");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn ranks_hold_bit_identical_weights_and_match_one_process() {
        let dir = tmp("identical");
        mpirun(3, &example_bin(), &["model", dir.to_str().unwrap()], false);
        // Each rank's own weights, bit for bit.
        let bits = |r: usize| -> Vec<(String, Vec<u32>)> {
            let c = Checkpoint::load(&dir.join(format!("rank{r}.safetensors"))).unwrap();
            assert_eq!(c.step, 12, "4 batches x 3 epochs");
            c.params
                .iter()
                .map(|(k, t)| (k.clone(), t.data.iter().map(|v| v.to_bits()).collect()))
                .collect()
        };
        let ranks: Vec<_> = (0..3).map(bits).collect();
        assert_eq!(ranks[0], ranks[1], "ranks 0 and 1 differ");
        assert_eq!(ranks[0], ranks[2], "ranks 0 and 2 differ");
        // The same fit in one process.
        let mut m = recur::train::Model::lstm(2, 6)
            .dense(1)
            .mse()
            .seed(3)
            .build(&Backend::Cpu)
            .unwrap();
        let (n, steps) = (13, 5);
        let x: Vec<f32> = (0..n * steps * 2)
            .map(|i| ((i * 37 % 23) as f32 / 23.0) - 0.5)
            .collect();
        let y: Vec<f32> = (0..n)
            .map(|s| x[s * steps * 2..(s + 1) * steps * 2].iter().sum::<f32>() * 0.3)
            .collect();
        let x = recur::nn::HostTensor::new(vec![n, steps, 2], x).unwrap();
        let y = recur::nn::HostTensor::new(vec![n, 1], y).unwrap();
        let losses = m
            .fit(&x, &y, recur::train::Fit::epochs(3).batch(4).seed(5))
            .unwrap();
        let one = m.trainer().checkpoint().unwrap();
        let rank0: Checkpoint = Checkpoint::load(&dir.join("rank0.safetensors")).unwrap();
        assert_same_weights(&rank0, &one, "Model::fit on 3 ranks");
        let theirs: Vec<f32> = serde_json::from_str(&rank0.meta["losses"]).unwrap();
        for (a, b) in theirs.iter().zip(&losses) {
            assert!(
                ((a - b) / b).abs() < 1e-5,
                "epoch losses {theirs:?} vs {losses:?}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn different_starting_weights_are_refused_on_every_rank() {
        let (stdout, _) = mpirun(2, &example_bin(), &["diverge"], false);
        for r in 0..2 {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("rank {r}: error")))
                .unwrap_or_else(|| panic!("rank {r} printed no error: {stdout}"));
            assert!(line.contains("weights differ at step 0"), "{line}");
        }
    }

    #[test]
    fn a_bad_batch_on_one_rank_stops_every_rank_with_its_message() {
        let (stdout, _) = mpirun(2, &example_bin(), &["fail"], false);
        for r in 0..2 {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("rank {r}: error")))
                .unwrap_or_else(|| panic!("rank {r} printed no error: {stdout}"));
            assert!(
                line.contains("rank 1 stopped the run") && line.contains("non-finite value"),
                "{line}"
            );
        }
    }

    /// `recur fit` (a forecaster) on 2 ranks against 1 process: the saved models.
    #[test]
    fn fit_on_two_ranks_matches_one_process() {
        let dir = tmp("fit");
        let series: String = (0..300)
            .map(|i| {
                format!(
                    "{:.5}\n",
                    (i as f32 * 0.21).sin() + 0.3 * (i as f32 * 0.05).cos()
                )
            })
            .collect();
        let (train, test) = (dir.join("train.txt"), dir.join("test.txt"));
        std::fs::write(&train, &series[..series.len() * 3 / 4]).unwrap();
        std::fs::write(&test, &series[series.len() * 3 / 4..]).unwrap();
        let run = |np: usize| -> Checkpoint {
            let out = dir.join(format!("fit{np}.safetensors"));
            let mut args = vec![
                "fit",
                "--train",
                train.to_str().unwrap(),
                "--test",
                test.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--backend",
                "cpu",
                "--hidden",
                "8",
                "--batch",
                "8",
                "--epochs",
                "2",
                "--window",
                "6",
            ];
            if np == 0 {
                let (code, _, stderr) = common::recur(&args);
                assert_eq!(code, 0, "{stderr}");
            } else {
                args.push("--distributed");
                mpirun(np, &recur_bin(), &args, false);
            }
            Checkpoint::load(&out).unwrap()
        };
        let (one, two) = (run(0), run(2));
        assert_same_weights(&two, &one, "recur fit on 2 ranks");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A corpus with graded similarity: 4 groups of 4 words in 2 families; a group's words
    /// share their group's context words and their family's.
    fn graded_corpus(dir: &Path) -> (PathBuf, PathBuf) {
        let mut rng = recur::word2vec::sampling::Rng::new(5, 0);
        let word = |g: usize, i: usize| format!("w{g}{i}");
        let ctx = |g: usize, i: usize| format!("c{g}{i}");
        let fam = |f: usize, i: usize| format!("f{f}{i}");
        let mut text = String::new();
        for _ in 0..6000 {
            let g = rng.below(4);
            let mut line = Vec::new();
            for _ in 0..8 {
                line.push(match rng.below(3) {
                    0 => word(g, rng.below(4)),
                    1 => ctx(g, rng.below(3)),
                    _ => fam(g / 2, rng.below(3)),
                });
            }
            text.push_str(&line.join(" "));
            text.push('\n');
        }
        let corpus = dir.join("corpus.txt");
        std::fs::write(&corpus, text).unwrap();
        // WordSim-style pairs: same group 9, same family 5, other family 1.
        let mut pairs = String::new();
        for g in 0..4 {
            for h in g..4 {
                for i in 0..4 {
                    let j = if g == h { (i + 1) % 4 } else { i };
                    let score = match (g == h, g / 2 == h / 2) {
                        (true, _) => 9.0,
                        (false, true) => 5.0,
                        _ => 1.0,
                    };
                    pairs.push_str(&format!("{}\t{}\t{score}\n", word(g, i), word(h, j)));
                }
            }
        }
        let p = dir.join("pairs.tsv");
        std::fs::write(&p, pairs).unwrap();
        (corpus, p)
    }

    #[test]
    fn word2vec_on_two_ranks_scores_like_one_process() {
        let dir = tmp("w2v");
        let (corpus, pairs) = graded_corpus(&dir);
        let run = |np: usize| -> f64 {
            let out = dir.join(format!("vectors{np}.txt"));
            let mut args = vec![
                "word2vec",
                "--corpus",
                corpus.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--size",
                "24",
                "--epochs",
                "5",
                "--min-count",
                "1",
                "--threads",
                "1",
                "--sync-words",
                "20000",
            ];
            if np == 0 {
                let (code, _, stderr) = common::recur(&args);
                assert_eq!(code, 0, "{stderr}");
            } else {
                args.push("--distributed");
                let (stdout, _) = mpirun(np, &recur_bin(), &args, false);
                assert_eq!(
                    stdout.matches("wrote").count(),
                    1,
                    "rank 0 alone writes: {stdout}"
                );
                assert!(
                    stdout.contains("2 ranks averaged their vectors")
                        && stdout.contains("identical"),
                    "{stdout}"
                );
            }
            let kv = recur::word2vec::load(&out).unwrap();
            recur::word2vec::evaluate_pairs(&kv, &pairs)
                .unwrap()
                .spearman
        };
        let (one, two) = (run(0), run(2));
        eprintln!("WordSim-style Spearman: 1 process {one:.3}, 2 ranks {two:.3}");
        assert!(one > 0.5, "the 1-process vectors learned the grades: {one}");
        assert!(two >= 0.95 * one, "2 ranks {two} against 1 process {one}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
