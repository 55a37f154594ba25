//! word2vec: gradient formulas, vocabulary, sampling, training on planted structure, keyed
//! vectors, evaluation, file formats, bad input.

mod common;

use std::path::{Path, PathBuf};

use rand::Rng;
use recur::check::rel_error;
use recur::word2vec::corpus::LineReader;
use recur::word2vec::grad::{self, Exact};
use recur::word2vec::huffman::Huffman;
use recur::word2vec::sampling::AliasTable;
use recur::word2vec::{self as w2v, Arch, Config, KeyedVectors, Output, Vocab};

fn tmp_dir(name: &str) -> PathBuf {
    common::tmp_dir(&format!("w2v-{name}"))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn err_text<T: std::fmt::Debug>(r: recur::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

// ---------------------------------------------------------------- gradients (f64)

/// An output layer's update: (h, neu1e, out, alpha) -> loss.
type Layer<'a> = &'a dyn Fn(&[f64], &mut [f64], &mut [f64], f64) -> f64;

/// Checks one output layer's update against central differences of its loss: with
/// alpha = 1 the function must add -dL/dh to neu1e and -dL/dout to the output rows.
fn check_layer(name: &str, d: usize, rows: usize, rng: &mut impl Rng, f: Layer) {
    let h: Vec<f64> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let out: Vec<f64> = (0..rows * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let loss = |h: &[f64], out: &[f64]| {
        let mut o = out.to_vec();
        let mut e = vec![0.0; d];
        f(h, &mut e, &mut o, 0.0)
    };
    let eps = 1e-6;
    let mut num_dh = vec![0.0; d];
    for i in 0..d {
        let (mut hp, mut hm) = (h.clone(), h.clone());
        hp[i] += eps;
        hm[i] -= eps;
        num_dh[i] = (loss(&hp, &out) - loss(&hm, &out)) / (2.0 * eps);
    }
    let mut num_dout = vec![0.0; rows * d];
    for i in 0..rows * d {
        let (mut op, mut om) = (out.clone(), out.clone());
        op[i] += eps;
        om[i] -= eps;
        num_dout[i] = (loss(&h, &op) - loss(&h, &om)) / (2.0 * eps);
    }
    let mut neu1e = vec![0.0; d];
    let mut o = out.clone();
    let l = f(&h, &mut neu1e, &mut o, 1.0);
    assert!(
        (l - loss(&h, &out)).abs() < 1e-12,
        "{name}: loss changes with alpha"
    );
    let dh: Vec<f64> = neu1e.iter().map(|x| -x).collect();
    let dout: Vec<f64> = o.iter().zip(&out).map(|(a, b)| b - a).collect();
    let (eh, eo) = (rel_error(&dh, &num_dh), rel_error(&dout, &num_dout));
    eprintln!("{name}: rel error dL/dh {eh:.2e}, dL/dout {eo:.2e}");
    assert!(eh < 1e-7, "{name}: dL/dh rel error {eh}");
    assert!(eo < 1e-7, "{name}: dL/dout rel error {eo}");
}

#[test]
fn negative_sampling_gradient_matches_finite_differences() {
    let mut rng = common::rng("negative_sampling_gradient");
    for _ in 0..3 {
        let d = rng.random_range(1..20);
        let rows = rng.random_range(6..12);
        // Distinct rows: the target and k negatives.
        let mut ids: Vec<u32> = (0..rows as u32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.random_range(0..=i));
        }
        let k = rng.random_range(1..rows);
        let targets = ids[..=k].to_vec();
        check_layer("negative", d, rows, &mut rng, &|h, e, o, a| {
            grad::negative(&Exact, h, e, o, &targets, a)
        });
    }
}

#[test]
fn hierarchical_softmax_gradient_matches_finite_differences() {
    let mut rng = common::rng("hierarchical_gradient");
    for _ in 0..3 {
        let v = rng.random_range(2..40);
        let counts: Vec<u64> = (0..v).map(|_| rng.random_range(1..1000)).collect();
        let tree = Huffman::new(&counts);
        let word = rng.random_range(0..v);
        let d = rng.random_range(1..20);
        let (points, codes) = (tree.points(word).to_vec(), tree.code(word).to_vec());
        check_layer(
            "hierarchical",
            d,
            tree.inner_nodes(),
            &mut rng,
            &|h, e, o, a| grad::hierarchical(&Exact, h, e, o, &points, &codes, a),
        );
    }
}

#[test]
fn softmax_gradient_matches_finite_differences() {
    let mut rng = common::rng("softmax_gradient");
    for _ in 0..3 {
        let v = rng.random_range(2..30);
        let d = rng.random_range(1..20);
        let target = rng.random_range(0..v) as u32;
        let mut scores = vec![0.0; v];
        let scores = std::cell::RefCell::new(&mut scores);
        check_layer("softmax", d, v, &mut rng, &|h, e, o, a| {
            grad::softmax(h, e, o, &mut scores.borrow_mut(), target, a)
        });
    }
}

#[test]
fn sigmoid_table_is_close_to_the_exact_sigmoid() {
    use recur::word2vec::grad::{Sigmoid, Table};
    let t = Table::default();
    for i in -1000..=1000 {
        let x = i as f32 * 0.01;
        let e: f32 = Sigmoid::<f32>::sigmoid(&Exact, x);
        let le: f32 = Sigmoid::<f32>::log_sigmoid(&Exact, x);
        assert!((t.sigmoid(x) - e).abs() < 0.01, "sigmoid({x})");
        assert!((t.log_sigmoid(x) - le).abs() < 0.02, "log_sigmoid({x})");
    }
}

// ---------------------------------------------------------------- vocabulary, sampling

#[test]
fn huffman_codes_are_a_complete_prefix_code_shorter_for_frequent_words() {
    let mut rng = common::rng("huffman");
    let v = rng.random_range(2..200);
    let mut counts: Vec<u64> = (0..v).map(|_| rng.random_range(1..10_000)).collect();
    counts.sort_by(|a, b| b.cmp(a));
    let tree = Huffman::new(&counts);
    assert_eq!(tree.inner_nodes(), v - 1);
    let kraft: f64 = (0..v).map(|w| 0.5f64.powi(tree.code(w).len() as i32)).sum();
    assert!((kraft - 1.0).abs() < 1e-12, "Kraft sum {kraft}");
    let codes: Vec<&[u8]> = (0..v).map(|w| tree.code(w)).collect();
    for (i, a) in codes.iter().enumerate() {
        assert_eq!(tree.points(i).len(), a.len());
        assert_eq!(tree.points(i)[0] as usize, v - 2, "paths start at the root");
        assert!(tree.points(i).iter().all(|&p| (p as usize) < v - 1));
        for (j, b) in codes.iter().enumerate() {
            assert!(i == j || !b.starts_with(a), "code {i} is a prefix of {j}");
        }
    }
    // Optimality: total cost no more than any other prefix code's, e.g. not more than a
    // balanced tree's.
    let cost: u64 = (0..v).map(|w| counts[w] * tree.code(w).len() as u64).sum();
    let balanced = (v as f64).log2().ceil() as u64 * counts.iter().sum::<u64>();
    assert!(cost <= balanced);
    for w in 1..v {
        if counts[w] < counts[w - 1] {
            assert!(tree.code(w).len() >= tree.code(w - 1).len());
        }
    }
}

#[test]
fn alias_table_draws_the_unigram_distribution_to_the_three_quarters() {
    let counts = [1000u64, 300, 50, 7, 1, 0, 20];
    let table = AliasTable::unigram(&counts, 0.75);
    let total: f64 = counts.iter().map(|&c| (c as f64).powf(0.75)).sum();
    for (i, &c) in counts.iter().enumerate() {
        let want = (c as f64).powf(0.75) / total;
        assert!(
            (table.probability(i) - want).abs() < 1e-6,
            "word {i}: {} vs {want}",
            table.probability(i)
        );
    }
    let mut rng = recur::word2vec::sampling::Rng::new(3, 0);
    let mut hist = [0usize; 7];
    let n = 200_000;
    for _ in 0..n {
        hist[table.sample(&mut rng)] += 1;
    }
    assert_eq!(hist[5], 0, "a word never seen is never drawn");
    for (i, &h) in hist.iter().enumerate() {
        let want = (counts[i] as f64).powf(0.75) / total;
        assert!((h as f64 / n as f64 - want).abs() < 0.005, "word {i}");
    }
}

#[test]
fn vocabulary_counts_sorts_caps_and_subsamples() {
    let dir = tmp_dir("vocab");
    let p = write(
        &dir,
        "c.txt",
        "b a c a\n  a b d\n\ne e e e e e\n".as_bytes(),
    );
    let v = Vocab::scan(&p, 1, None).unwrap();
    assert_eq!(v.words(), ["e", "a", "b", "c", "d"]);
    assert_eq!(v.counts(), [6, 3, 2, 1, 1]);
    assert_eq!(v.train_words(), 13);
    let v2 = Vocab::scan(&p, 2, None).unwrap();
    assert_eq!(v2.words(), ["e", "a", "b"]);
    let v3 = Vocab::scan(&p, 1, Some(2)).unwrap();
    assert_eq!(v3.words(), ["e", "a"]);
    assert_eq!(v3.id("a"), Some(1));
    assert_eq!(v3.id("b"), None);
    // word2vec.c: keep = (sqrt(c / t) + 1) * t / c, t = sample * train_words.
    let keep = v.keep_probabilities(0.01);
    let t = 0.01 * 13.0;
    let want = ((6.0f64 / t).sqrt() + 1.0) * t / 6.0;
    assert!((keep[0] as f64 - want).abs() < 1e-6);
    assert_eq!(v.keep_probabilities(0.0), vec![1.0; 5]);
    assert!(err_text(Vocab::scan(&p, 7, None)).contains("empty after min_count=7"));
    let empty = write(&dir, "empty.txt", b"\n \n\t\n");
    assert!(err_text(Vocab::scan(&empty, 1, None)).contains("has no words"));
}

#[test]
fn invalid_utf8_in_the_corpus_is_an_error_naming_the_byte_offset() {
    let dir = tmp_dir("utf8");
    let p = write(&dir, "bad.txt", b"good words here\nok \xff\xfe bad\n");
    let e = err_text(Vocab::scan(&p, 1, None));
    assert!(e.contains("invalid UTF-8 at byte offset 19"), "{e}");
    let e = err_text(w2v::train(
        &p,
        &Config {
            min_count: 1,
            ..Config::default()
        },
    ));
    assert!(e.contains("byte offset 19"), "{e}");
}

#[test]
fn byte_ranges_share_the_lines_out_exactly_once() {
    let mut rng = common::rng("byte_ranges");
    let dir = tmp_dir("ranges");
    let lines: Vec<String> = (0..rng.random_range(1..60))
        .map(|i| "w ".repeat(rng.random_range(0..5)) + &i.to_string())
        .collect();
    let p = write(&dir, "c.txt", (lines.join("\n") + "\n").as_bytes());
    let len = std::fs::metadata(&p).unwrap().len();
    for parts in 1..7u64 {
        let mut got = Vec::new();
        for t in 0..parts {
            let mut r = LineReader::open_range(&p, len * t / parts, len * (t + 1) / parts).unwrap();
            while let Some(l) = r.next_line().unwrap() {
                got.push(l.to_string());
            }
        }
        assert_eq!(got, lines, "{parts} parts");
    }
}

// ---------------------------------------------------------------- training

fn planted_corpus(dir: &Path) -> PathBuf {
    common::planted::corpus(dir)
}

fn small_config(arch: Arch, output: Output) -> Config {
    Config {
        arch,
        output,
        size: 16,
        window: 3,
        min_count: 1,
        sample: 0.0,
        epochs: 5,
        threads: 1,
        seed: 5,
        ..Config::default()
    }
}

#[test]
fn training_recovers_planted_neighbours_for_every_architecture_and_output_layer() {
    let dir = tmp_dir("planted");
    let corpus = planted_corpus(&dir);
    for arch in [Arch::SkipGram, Arch::Cbow] {
        for output in [Output::Negative(5), Output::Hierarchical, Output::Softmax] {
            let (kv, report) = w2v::train(&corpus, &small_config(arch, output)).unwrap();
            let first = report.epoch_loss[0];
            let last = *report.epoch_loss.last().unwrap();
            assert!(last < first, "{arch:?} {output:?}: loss {first} -> {last}");
            common::planted::assert_recovered(&kv, &format!("{arch:?} {output:?}"));
        }
    }
}

#[test]
fn one_thread_runs_repeat_bit_for_bit_for_a_seed() {
    let dir = tmp_dir("repeat");
    let corpus = planted_corpus(&dir);
    let cfg = Config {
        sample: 1e-2,
        ..small_config(Arch::SkipGram, Output::Negative(3))
    };
    let (a, _) = w2v::train(&corpus, &cfg).unwrap();
    let (b, _) = w2v::train(&corpus, &cfg).unwrap();
    assert_eq!(a.data(), b.data());
    let (c, _) = w2v::train(
        &corpus,
        &Config {
            seed: 6,
            ..cfg.clone()
        },
    )
    .unwrap();
    assert_ne!(a.data(), c.data());
    // Several threads train too (lock-free, not repeatable bit for bit).
    let (m, report) = w2v::train(&corpus, &Config { threads: 3, ..cfg }).unwrap();
    assert_eq!(m.len(), 16);
    assert_eq!(report.words, 5 * 9000);
    assert!(m.data().iter().all(|x| x.is_finite()));
}

#[test]
fn bad_settings_are_clear_errors() {
    let dir = tmp_dir("settings");
    let corpus = planted_corpus(&dir);
    let base = small_config(Arch::Cbow, Output::Negative(5));
    let cases = [
        (
            Config {
                window: 0,
                ..base.clone()
            },
            "window 0",
        ),
        (
            Config {
                size: 0,
                ..base.clone()
            },
            "vector size 0",
        ),
        (
            Config {
                epochs: 0,
                ..base.clone()
            },
            "epochs 0",
        ),
        (
            Config {
                threads: 0,
                ..base.clone()
            },
            "threads 0",
        ),
        (
            Config {
                output: Output::Negative(0),
                ..base.clone()
            },
            "0 negative samples",
        ),
        (
            Config {
                alpha: f32::NAN,
                ..base.clone()
            },
            "learning rate NaN",
        ),
        (
            Config {
                sample: -1.0,
                ..base.clone()
            },
            "sample -1",
        ),
        (
            Config {
                min_count: 100_000,
                ..base.clone()
            },
            "empty after min_count=100000",
        ),
    ];
    for (cfg, want) in cases {
        let e = err_text(w2v::train(&corpus, &cfg));
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
    let empty = write(&dir, "empty.txt", b"");
    assert!(err_text(w2v::train(&empty, &base)).contains("has no words"));
    let missing = dir.join("missing.txt");
    assert!(err_text(w2v::train(&missing, &base)).contains("missing.txt"));
}

// ---------------------------------------------------------------- keyed vectors

fn toy_vectors() -> KeyedVectors {
    // king - man + woman = queen, exactly.
    let words = ["king", "queen", "man", "woman", "apple"]
        .map(String::from)
        .to_vec();
    let data = vec![
        1.0, 1.0, 0.0, 0.1, //
        1.0, 0.0, 1.0, 0.1, //
        0.0, 1.0, 0.0, 0.0, //
        0.0, 0.0, 1.0, 0.0, //
        0.0, 0.0, 0.0, 1.0,
    ];
    KeyedVectors::new(words, 4, data).unwrap()
}

#[test]
fn similarity_most_similar_and_analogy_by_cosine() {
    let kv = toy_vectors();
    let s = kv.similarity("king", "queen").unwrap();
    let want = 1.01 / (2.01f32.sqrt() * 2.01f32.sqrt());
    assert!((s - want).abs() < 1e-6);
    assert_eq!(w2v::cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
    let near = kv.most_similar(&["king"], &[], 10).unwrap();
    assert_eq!(near.len(), 4, "every word but the query");
    assert!(near.windows(2).all(|p| p[0].1 >= p[1].1), "best first");
    assert!(near.iter().all(|(w, _)| w != "king"));
    // Brute force agrees on the order.
    let mut brute: Vec<(String, f32)> = kv
        .words()
        .iter()
        .filter(|w| *w != "king")
        .map(|w| (w.clone(), kv.similarity("king", w).unwrap()))
        .collect();
    brute.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (a, b) in near.iter().zip(&brute) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-6);
    }
    assert_eq!(kv.analogy("man", "king", "woman", 1).unwrap()[0].0, "queen");
    assert_eq!(
        kv.most_similar(&["king", "woman"], &["man"], 1).unwrap()[0].0,
        "queen"
    );
    assert!(err_text(kv.most_similar(&["prince"], &[], 3))
        .contains("\"prince\" is not in the vocabulary"));
    assert!(err_text(kv.similarity("king", "prince")).contains("prince"));
    assert!(err_text(kv.analogy("man", "king", "girl", 1)).contains("girl"));
    assert!(err_text(KeyedVectors::new(vec!["a".into()], 2, vec![1.0, f32::NAN])).contains("NaN"));
    assert!(err_text(KeyedVectors::new(
        vec!["a".into(), "a".into()],
        1,
        vec![1.0, 2.0]
    ))
    .contains("twice"));
}

// ---------------------------------------------------------------- evaluation

#[test]
fn word_pair_evaluation_reports_spearman_pearson_and_oov() {
    let dir = tmp_dir("pairs");
    let kv = toy_vectors();
    let p = write(
        &dir,
        "pairs.tsv",
        b"# word1\tword2\tscore\nking\tqueen\t8\nking\tman\t5\nKing\tapple\t1\nman\twoman\t3\nking\tprince\t9\n",
    );
    let r = w2v::evaluate_pairs(&kv, &p).unwrap();
    assert_eq!((r.pairs, r.oov), (4, 1));
    assert!((r.oov_ratio - 0.2).abs() < 1e-12);
    let model: Vec<f64> = [
        ("king", "queen"),
        ("king", "man"),
        ("king", "apple"),
        ("man", "woman"),
    ]
    .iter()
    .map(|(a, b)| kv.similarity(a, b).unwrap() as f64)
    .collect();
    let human = [8.0, 5.0, 1.0, 3.0];
    assert!((r.pearson - w2v::eval::pearson(&model, &human)).abs() < 1e-12);
    assert!((r.spearman - w2v::eval::spearman(&model, &human)).abs() < 1e-12);
    // Hand-checked values of the statistics themselves.
    assert!(
        (w2v::eval::pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]) - 0.9933992677987828).abs() < 1e-12
    );
    assert_eq!(
        w2v::eval::ranks(&[10.0, 20.0, 10.0, 5.0]),
        vec![2.5, 4.0, 2.5, 1.0]
    );
    assert!(
        (w2v::eval::spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]) - 0.8).abs() < 1e-12
    );
    let bad = write(&dir, "bad.tsv", b"king queen 8\n");
    assert!(err_text(w2v::evaluate_pairs(&kv, &bad)).contains("line 1"));
    let bad = write(&dir, "bad2.tsv", b"king\tqueen\tlots\n");
    assert!(err_text(w2v::evaluate_pairs(&kv, &bad)).contains("\"lots\" is not a number"));
}

#[test]
fn analogy_evaluation_reports_accuracy_per_section() {
    let dir = tmp_dir("analogies");
    let kv = toy_vectors();
    let p = write(
        &dir,
        "q.txt",
        b": royalty\nman king woman queen\nMan King Woman Queen\nman king woman apple\n: fruit\nman king boy prince\nking queen man woman\n",
    );
    let r = w2v::evaluate_analogies(&kv, &p).unwrap();
    assert_eq!(r.sections.len(), 2);
    let s = &r.sections[0];
    assert_eq!(
        (s.name.as_str(), s.correct, s.total, s.skipped),
        ("royalty", 2, 3, 0)
    );
    let f = &r.sections[1];
    assert_eq!(
        (f.correct, f.total, f.skipped),
        (
            kv.analogy("king", "queen", "man", 1).unwrap()[0]
                .0
                .eq("woman") as usize,
            1,
            1
        )
    );
    assert_eq!(r.overall.total, 4);
    assert_eq!(r.overall.skipped, 1);
    let bad = write(&dir, "bad.txt", b"man king woman queen\n");
    assert!(err_text(w2v::evaluate_analogies(&kv, &bad)).contains("before any"));
    let bad = write(&dir, "bad2.txt", b": s\nman king woman\n");
    assert!(err_text(w2v::evaluate_analogies(&kv, &bad)).contains("four words"));
}

// ---------------------------------------------------------------- formats

#[test]
fn text_and_binary_files_round_trip() {
    let mut rng = common::rng("format_round_trip");
    let dir = tmp_dir("roundtrip");
    let (v, d) = (rng.random_range(1..30), rng.random_range(1..20));
    let words: Vec<String> = (0..v).map(|i| format!("w{i}é")).collect();
    let data = common::random_vec(&mut rng, v * d);
    let kv = KeyedVectors::new(words.clone(), d, data.clone()).unwrap();
    let (t, b) = (dir.join("v.txt"), dir.join("v.bin"));
    w2v::save_text(&kv, &t).unwrap();
    w2v::save_binary(&kv, &b).unwrap();
    // Text: six decimals (error <= 5e-7) plus the parse back to f32 (<= half an ulp, 3e-8 below 1).
    for (path, tol) in [(&t, 5.3e-7f32), (&b, 0.0)] {
        for back in [
            w2v::load(path).unwrap(),
            if tol == 0.0 {
                w2v::load_binary(path).unwrap()
            } else {
                w2v::load_text(path).unwrap()
            },
        ] {
            assert_eq!(back.words(), &words[..]);
            assert_eq!(back.dim(), d);
            for (x, y) in back.data().iter().zip(&data) {
                assert!((x - y).abs() <= tol, "{x} vs {y}");
            }
        }
    }
    // word2vec.c's exact layout.
    let small =
        KeyedVectors::new(vec!["a".into(), "bc".into()], 2, vec![0.5, -0.25, 1.0, 0.0]).unwrap();
    assert_eq!(
        w2v::format::to_text(&small),
        b"2 2\na 0.500000 -0.250000 \nbc 1.000000 0.000000 \n"
    );
    let mut want = b"2 2\na ".to_vec();
    for x in [0.5f32, -0.25] {
        want.extend_from_slice(&x.to_le_bytes());
    }
    want.extend_from_slice(b"\nbc ");
    for x in [1.0f32, 0.0] {
        want.extend_from_slice(&x.to_le_bytes());
    }
    want.push(b'\n');
    assert_eq!(w2v::format::to_binary(&small), want);
}

#[test]
fn files_written_by_another_tool_load() {
    let dir = tmp_dir("foreign");
    // gensim's text layout: full-precision values, no trailing space.
    let t = write(
        &dir,
        "g.txt",
        b"3 2\nthe 0.1 -2.5e-3\nof 1 2\nand -0.0 3.25\n",
    );
    let kv = w2v::load(&t).unwrap();
    assert_eq!(kv.words(), ["the", "of", "and"]);
    assert_eq!(kv.vector("the").unwrap(), &[0.1, -2.5e-3]);
    assert_eq!(kv.vector("and").unwrap(), &[-0.0, 3.25]);
    // gensim's binary layout: no newline after a record.
    let mut b = b"2 3\n".to_vec();
    for (w, v) in [("x", [1.0f32, 2.0, 3.0]), ("yz", [-1.0, 0.5, 1e-3])] {
        b.extend_from_slice(w.as_bytes());
        b.push(b' ');
        v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    }
    let p = write(&dir, "g.bin", &b);
    let kv = w2v::load(&p).unwrap();
    assert_eq!(kv.words(), ["x", "yz"]);
    assert_eq!(kv.vector("yz").unwrap(), &[-1.0, 0.5, 1e-3]);
    assert_eq!(w2v::load_binary(&p).unwrap().data(), kv.data());
    // A vector whose bytes hold '\n' and ' ' (0x0a, 0x20) still parses as binary.
    let tricky = f32::from_le_bytes([0x0a, 0x20, 0x0a, 0x3f]);
    let mut b = b"1 2\nw ".to_vec();
    b.extend_from_slice(&tricky.to_le_bytes());
    b.extend_from_slice(&tricky.to_le_bytes());
    let p = write(&dir, "t.bin", &b);
    assert_eq!(
        w2v::load(&p).unwrap().vector("w").unwrap(),
        &[tricky, tricky]
    );
}

#[test]
fn broken_vector_files_are_clear_errors() {
    let dir = tmp_dir("broken");
    let text_cases: [(&[u8], &str); 6] = [
        (
            b"3 2\na 1 2\nb 3 4\n",
            "ends early: the header says 3 words, found 2",
        ),
        (b"1 2\na 1 2\nb 3 4\n", "header says 1 words but line 3"),
        (
            b"2 2\na 1 2\nb 3\n",
            "line 3 (\"b\") has 1 values: the header says 2",
        ),
        (b"2 2\na 1 2\nb 3 x\n", "value \"x\" is not a finite number"),
        (b"two 2\na 1 2\n", "header"),
        (b"", "no header"),
    ];
    for (bytes, want) in text_cases {
        let p = write(&dir, "bad.txt", bytes);
        let e = err_text(w2v::load_text(&p));
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
    let mut b = b"2 2\na ".to_vec();
    [1.0f32, 2.0]
        .iter()
        .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    b.extend_from_slice(b"\nb ");
    b.extend_from_slice(&3.0f32.to_le_bytes());
    let p = write(&dir, "short.bin", &b);
    let e = err_text(w2v::load_binary(&p));
    assert!(e.contains("ends early in the vector of \"b\""), "{e}");
    // Too short for the values the header declares: refused before reading the records.
    let p = write(&dir, "short2.bin", &b[..b.len() - 6]);
    let e = err_text(w2v::load_binary(&p));
    assert!(
        e.contains("2 words of 2 values, whose values alone take at least 16 bytes in the binary format; the file holds 11 bytes"),
        "{e}"
    );
    // Bytes enough for the values, but no record: the reader says where it ran out.
    let p = write(
        &dir,
        "no-space.bin",
        b"2 1
abcdefgh",
    );
    assert!(err_text(w2v::load_binary(&p)).contains("ends early: the header says 2 words, found 0"));
    let mut more = b.clone();
    more.extend_from_slice(&4.0f32.to_le_bytes());
    more.extend_from_slice(b"\nc ");
    let p = write(&dir, "long.bin", &more);
    assert!(err_text(w2v::load_binary(&p)).contains("header says 2 words but the file goes on"));
    let mut nan = b"1 1\na ".to_vec();
    nan.extend_from_slice(&f32::NAN.to_le_bytes());
    let p = write(&dir, "nan.bin", &nan);
    assert!(err_text(w2v::load_binary(&p)).contains("finite"));
}

// ---------------------------------------------------------------- command line

#[test]
fn command_line_trains_queries_and_evaluates() {
    let dir = tmp_dir("cli");
    let corpus = planted_corpus(&dir);
    let out = dir.join("v.bin");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (ok, text) = run(&[
        "word2vec",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--skipgram",
        "--negative",
        "3",
        "--size",
        "12",
        "--min-count",
        "1",
        "--threads",
        "1",
        "--binary",
        "--epochs",
        "3",
    ]);
    assert!(ok, "{text}");
    let v = out.to_str().unwrap();
    let (ok, text) = run(&["similar", v, "cat", "-k", "2"]);
    assert!(ok && text.lines().count() == 2, "{text}");
    let (ok, text) = run(&["analogy", v, "cat", "dog", "red", "-k", "1"]);
    assert!(ok, "{text}");
    let q = write(&dir, "q.txt", b": s\ncat dog red blue\n");
    let (ok, text) = run(&["evaluate", v, "--analogies", q.to_str().unwrap()]);
    assert!(ok && text.contains("overall"), "{text}");
    let (ok, text) = run(&["similar", v, "unicorn"]);
    assert!(
        !ok && text.contains("\"unicorn\" is not in the vocabulary"),
        "{text}"
    );
    let (ok, text) = run(&[
        "word2vec",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        v,
        "--window",
        "0",
    ]);
    assert!(!ok && text.contains("window 0"), "{text}");
}

#[test]
fn bench_measures_words_per_second_on_a_synthetic_corpus() {
    let dir = tmp_dir("bench");
    let corpus = dir.join("zipf.txt");
    recur::apps::bench::word2vec::synthetic_corpus(&corpus, 20_000, 500, 1).unwrap();
    let cfg = Config {
        size: 16,
        epochs: 1,
        threads: 1,
        min_count: 1,
        ..Config::default()
    };
    let case = recur::apps::bench::word2vec::measure(&corpus, &cfg, 2).unwrap();
    assert_eq!(case.train_words, 20_000);
    assert!(case.vocab_size > 100 && case.vocab_size <= 500);
    assert!(case.words_per_sec > 0.0 && case.effective_words_per_sec <= case.words_per_sec);
}

#[test]
fn a_one_word_vocabulary_and_a_vocabulary_cap_train() {
    let dir = tmp_dir("tiny");
    let one = write(&dir, "one.txt", b"a a a a\na a\n");
    for arch in [Arch::SkipGram, Arch::Cbow] {
        for output in [Output::Negative(2), Output::Hierarchical, Output::Softmax] {
            let (kv, report) = w2v::train(&one, &small_config(arch, output)).unwrap();
            assert_eq!(kv.len(), 1);
            assert!(kv.data().iter().all(|x| x.is_finite()));
            assert!(
                report.epoch_loss.iter().all(|l| l.is_finite()),
                "{arch:?} {output:?}"
            );
        }
    }
    let corpus = planted_corpus(&dir);
    let cfg = Config {
        max_vocab: Some(5),
        ..small_config(Arch::Cbow, Output::Hierarchical)
    };
    let (kv, report) = w2v::train(&corpus, &cfg).unwrap();
    assert_eq!((kv.len(), report.vocab_size), (5, 5));
}

#[test]
fn the_learning_rate_falls_linearly_to_its_floor() {
    use recur::word2vec::train::learning_rate;
    let cfg = Config {
        alpha: 0.025,
        min_alpha: 0.0001,
        ..Config::default()
    };
    assert_eq!(learning_rate(&cfg, 0, 1000), 0.025);
    let half = learning_rate(&cfg, 500, 1000);
    assert!(
        (half - 0.025 * (1.0 - 500.0 / 1001.0)).abs() < 1e-7,
        "{half}"
    );
    assert_eq!(learning_rate(&cfg, 1000, 1000), 0.0001);
    assert!(learning_rate(&cfg, 300, 1000) > learning_rate(&cfg, 600, 1000));
}

#[test]
fn an_embedding_layer_loads_from_a_vectors_file_with_its_vocabulary() {
    let dir = tmp_dir("embedding");
    // Written by hand, as another tool writes it: no trailing spaces.
    let text = write(&dir, "v.txt", b"3 2\nthe 1 2\ncat 0.5 -1\nsat -3 0.25\n");
    let (layer, vocab) = w2v::load_embedding(&text, false).unwrap();
    assert_eq!((layer.input_dim, layer.output_dim), (3, 2));
    assert!(!layer.trainable);
    assert_eq!(layer.weight.data, vec![1.0, 2.0, 0.5, -1.0, -3.0, 0.25]);
    assert_eq!((vocab["the"], vocab["cat"], vocab["sat"]), (0, 1, 2));
    assert_eq!(vocab.len(), 3);
    // The words of a sentence, looked up through the layer, give their vectors.
    let ids: Vec<u32> = ["sat", "the", "cat"].iter().map(|w| vocab[*w]).collect();
    let out = layer
        .forward_cpu(&layer.weight_as::<f32>(), &ids, 1, 3)
        .unwrap();
    assert_eq!(out, vec![-3.0, 0.25, 1.0, 2.0, 0.5, -1.0]);
    // The binary format gives the same layer, trainable when asked.
    let kv = w2v::load(&text).unwrap();
    let bin = dir.join("v.bin");
    w2v::save_binary(&kv, &bin).unwrap();
    let (layer_b, vocab_b) = w2v::load_embedding(&bin, true).unwrap();
    assert!(layer_b.trainable);
    assert_eq!(layer_b.weight.data, layer.weight.data);
    assert_eq!(vocab_b, vocab);
    let short = write(&dir, "short.txt", b"3 2\nthe 1 2\ncat 0.5 -1\n");
    let e = err_text(w2v::load_embedding(&short, false));
    assert!(e.contains("short.txt"), "{e}");
}
