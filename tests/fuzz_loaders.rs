//! Fuzzing on stable Rust, a seeded loop: every loader (safetensors weights and inputs,
//! checkpoints and `recur fit` models, word2vec text and binary vectors, pair and analogy
//! files, corpora, CSV data, language-model texts) is fed valid files, byte-level mutations
//! of them and structured forgeries (huge counts, shapes whose product overflows, offsets
//! past the end, negative and NaN numbers, invalid UTF-8, NUL bytes, CRLF, an empty file).
//! Each must return `Ok` or an error, never panic or abort, and hold at most a bounded
//! multiple of its input's size at once, measured by the counting allocator below. Where a
//! loader accepts the input, what the command line does next with it (a forward pass, a
//! most_similar query, a short fit or training run) must not panic either.
//!
//! The seed is fixed (so CI runs the same cases) unless `RECUR_TEST_SEED` is set; it is
//! printed. `RECUR_FUZZ_SCALE` (default 1) multiplies the number of cases for longer runs.
//! A failing input is written to the temporary folder, named in the failure.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::apps::charlm::{self, CharLmOptions, CharVocab, Streams};
use recur::apps::fit::{self, FitModel, FitOptions, Table};
use recur::nn::{parse_safetensors, HostTensor, Recurrent, RecurrentConfig, Tensors};
use recur::ops::recurrent::CellKind;
use recur::train::{Checkpoint, EmbeddingSpec, Head, Loss, ModelSpec, SequenceModel};
use recur::word2vec::{self, KeyedVectors, Vocab};
use recur::Backend;
use recur::Result;

// ------------------------------------------------------------------ counting allocator

/// Counts the bytes each thread holds (allocated minus freed by it) and their peak, so
/// tests running in parallel threads measure only their own loader.
struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is passed to the system allocator unchanged; the counting only touches
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `f`'s result and the most bytes this thread held at once while it ran, beyond what it
/// held before.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, (peak - start).max(0) as u64)
}

#[test]
fn the_counting_allocator_sees_a_loaders_peak() {
    let (_, peak) = peak_of(|| {
        let v = vec![0u8; 1 << 20];
        drop(v);
        vec![0u8; 1000]
    });
    assert!((1 << 20..(1 << 20) + 4096).contains(&peak), "{peak}");
}

#[test]
fn the_harness_reports_a_panic_and_an_allocation_past_its_bound() {
    let mut fz = Fuzz::new("harness_self_check");
    let input = [7u8; 1000];
    let ok = fz.load("thrifty", &input, 4, 0, || Ok(vec![0u8; 3000]));
    assert_eq!(ok.map(|v| v.len()), Some(3000));
    assert!(fz.failures.is_empty(), "{:?}", fz.failures);
    fz.load("wasteful", &input, 4, 0, || Ok(vec![0u8; 5000]));
    fz.load("panicky", &input, 4, 0, || -> Result<()> { panic!("boom") });
    fz.then("after", &input, || -> Result<()> { panic!("bang") });
    assert_eq!(fz.failures.len(), 3, "{:?}", fz.failures);
    assert!(
        fz.failures[0].contains("wasteful: held 5000 bytes"),
        "{}",
        fz.failures[0]
    );
    assert!(
        fz.failures[1].contains("panicky: panicked: boom"),
        "{}",
        fz.failures[1]
    );
    assert!(
        fz.failures[2].contains("after: panicked: bang"),
        "{}",
        fz.failures[2]
    );
    let _ = std::fs::remove_dir_all(&fz.dir);
}

// ------------------------------------------------------------------ seeds and cases

const FIXED_SEED: u64 = 15;

/// The run's seed (fixed unless `RECUR_TEST_SEED` is set), printed, and a generator for
/// one test drawn from it.
fn rng(test: &str) -> StdRng {
    let seed = std::env::var("RECUR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(FIXED_SEED);
    eprintln!("{test}: RECUR_TEST_SEED={seed}");
    let name: u64 = test.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    StdRng::seed_from_u64(seed ^ name)
}

/// `n` cases, times `RECUR_FUZZ_SCALE`.
fn cases(n: usize) -> usize {
    let scale: f64 = std::env::var("RECUR_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale).ceil() as usize).max(1)
}

/// Byte strings that tend to break parsers: NUL, line endings, invalid UTF-8, special and
/// out-of-range numbers, separators and JSON punctuation.
const TOKENS: &[&[u8]] = &[
    b"\0",
    b"\r\n",
    b"\r",
    b"\n",
    b"\n\n",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x98\x80",
    b"NaN",
    b"nan",
    b"inf",
    b"-inf",
    b"-1",
    b"-0",
    b"0",
    b"1e999",
    b"-1e40",
    b"99999999999999999999",
    b"18446744073709551615",
    b"9223372036854775807",
    b"4294967296",
    b"999999999999",
    b" ",
    b"\t",
    b",",
    b":",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"#",
];

/// One to four random edits of `bytes`.
fn mutate(rng: &mut StdRng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = |rng: &mut StdRng, b: &Vec<u8>| rng.random_range(0..=b.len());
        match rng.random_range(0..9) {
            0 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            2 => {
                let i = at(rng, &b);
                let n = rng.random_range(1..=8);
                let new: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(i..i, new);
            }
            3 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                let j = rng.random_range(i..=b.len().min(i + 64));
                b.drain(i..j);
            }
            4 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                let j = rng.random_range(i..=b.len().min(i + 64));
                let copy = b[i..j].to_vec();
                let k = at(rng, &b);
                b.splice(k..k, copy);
            }
            5 => {
                let n = at(rng, &b);
                b.truncate(n);
            }
            6 | 7 => {
                let i = at(rng, &b);
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                b.splice(i..i, t.iter().copied());
            }
            _ => {
                // Replace a run of digits (a count, a size, an offset) with a token.
                let digits: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_digit()).collect();
                if let Some(&i) = digits.get(rng.random_range(0..digits.len().max(1))) {
                    let j = (i..b.len())
                        .find(|&j| !b[j].is_ascii_digit())
                        .unwrap_or(b.len());
                    let t = TOKENS[rng.random_range(0..TOKENS.len())];
                    b.splice(i..j, t.iter().copied());
                }
            }
        }
    }
    b
}

/// `valid` for every third case, a mutation of it for the others.
fn every_third_valid(rng: &mut StdRng, case: usize, valid: String) -> Vec<u8> {
    if case.is_multiple_of(3) {
        valid.into_bytes()
    } else {
        mutate(rng, valid.as_bytes())
    }
}

// ------------------------------------------------------------------ the check

/// What one test saw: failures (a panic or an allocation past the bound) and, per loader,
/// how many inputs were accepted and the largest peak-to-input ratio.
struct Fuzz {
    test: &'static str,
    dir: PathBuf,
    failures: Vec<String>,
    stats: std::collections::BTreeMap<&'static str, (usize, usize, f64)>,
}

impl Fuzz {
    fn new(test: &'static str) -> Self {
        let dir = std::env::temp_dir().join(format!("recur-fuzz-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            test,
            dir,
            failures: Vec::new(),
            stats: Default::default(),
        }
    }

    /// A file holding `bytes`, for the loaders that read paths.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn fail(&mut self, loader: &str, input: &[u8], why: String) {
        let n = self.failures.len();
        let saved = self.dir.join(format!("failure-{n}-{loader}.bin"));
        let _ = std::fs::write(&saved, input);
        self.failures
            .push(format!("{loader}: {why} (input: {})", saved.display()));
    }

    /// Runs `load` on `input`, which must return without panicking and hold at most
    /// `per_byte` bytes per input byte plus `fixed` bytes at its peak. Returns its value
    /// when it accepted the input.
    fn load<T>(
        &mut self,
        loader: &'static str,
        input: &[u8],
        per_byte: u64,
        fixed: u64,
        load: impl FnOnce() -> Result<T>,
    ) -> Option<T> {
        let r = catch_unwind(AssertUnwindSafe(|| peak_of(load)));
        let (result, peak) = match r {
            Ok(x) => x,
            Err(p) => {
                self.fail(loader, input, format!("panicked: {}", panic_text(&p)));
                return None;
            }
        };
        let bound = per_byte * input.len() as u64 + fixed;
        if peak > bound {
            self.fail(
                loader,
                input,
                format!(
                    "held {peak} bytes at once for {} input bytes (bound {bound}: {per_byte} per \
                     byte + {fixed})",
                    input.len()
                ),
            );
        }
        let s = self.stats.entry(loader).or_default();
        s.0 += 1;
        s.1 += result.is_ok() as usize;
        if input.len() > 64 {
            s.2 = s.2.max(peak as f64 / input.len() as f64);
        }
        result.ok()
    }

    /// Runs what follows a successful load; it may fail, but not panic.
    fn then<T>(&mut self, what: &'static str, input: &[u8], run: impl FnOnce() -> Result<T>) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(run)) {
            self.fail(what, input, format!("panicked: {}", panic_text(&p)));
        }
    }

    fn finish(self) {
        for (loader, (n, ok, ratio)) in &self.stats {
            eprintln!(
                "{}: {loader}: {n} inputs, {ok} accepted, peak at most {ratio:.1} bytes per input byte",
                self.test
            );
        }
        assert!(
            self.failures.is_empty(),
            "{}: {} failures (rerun with the RECUR_TEST_SEED printed above):\n{}",
            self.test,
            self.failures.len(),
            self.failures.join("\n")
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Random words: ASCII, accented, emoji, and now and then one with odd punctuation.
fn word(rng: &mut StdRng) -> String {
    const PARTS: &[&str] = &["a", "the", "kö", "日本", "x1", "😀", "-", "'s", "Z", "qq"];
    (0..rng.random_range(1..=3))
        .map(|_| PARTS[rng.random_range(0..PARTS.len())])
        .collect()
}

fn values(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

// ------------------------------------------------------------------ word2vec files

fn keyed_vectors(rng: &mut StdRng) -> KeyedVectors {
    let dim = rng.random_range(1..=8);
    let mut words: Vec<String> = Vec::new();
    while words.len() < rng.random_range(2..=12) {
        let w = word(rng);
        if !words.contains(&w) {
            words.push(w);
        }
    }
    let data = values(rng, words.len() * dim);
    KeyedVectors::new(words, dim, data).unwrap()
}

/// Vectors headers that declare more than any file holds, or nonsense.
const FORGED_HEADERS: &[&str] = &[
    "999999999999 8",
    "1 999999999999",
    "18446744073709551615 18446744073709551615",
    "4611686018427387904 4",
    "0 5",
    "5 0",
    "-1 5",
    "5 -1",
    "NaN 3",
    "3 NaN",
    "2",
    "",
    "2 3 4",
];

#[test]
fn word2vec_vectors_files() {
    let mut rng = rng("word2vec_vectors_files");
    let mut fz = Fuzz::new("word2vec_vectors_files");
    for case in 0..cases(3000) {
        let kv = keyed_vectors(&mut rng);
        let valid = if rng.random() {
            word2vec::format::to_text(&kv)
        } else {
            word2vec::format::to_binary(&kv)
        };
        let input = match case % 4 {
            0 => valid,
            1 | 2 => mutate(&mut rng, &valid),
            _ => {
                // A forged header over a valid body.
                let body = &valid[valid.iter().position(|&b| b == b'\n').unwrap() + 1..];
                let h = FORGED_HEADERS[rng.random_range(0..FORGED_HEADERS.len())];
                let mut b = format!("{h}\n").into_bytes();
                b.extend_from_slice(body);
                b
            }
        };
        // Words and an index over them: some tens of bytes per word of a few input bytes.
        let (per_byte, fixed) = (48, 16 << 10);
        let parsed = fz.load("vectors (detected)", &input, per_byte, fixed, || {
            word2vec::format::parse(&input)
        });
        fz.load("vectors text", &input, per_byte, fixed, || {
            word2vec::format::parse_text(&input)
        });
        fz.load("vectors binary", &input, per_byte, fixed, || {
            word2vec::format::parse_binary(&input)
        });
        if let Some(kv) = parsed {
            fz.then("most_similar", &input, || {
                let w = kv.words()[0].clone();
                kv.most_similar(&[&w], &[], rng.random_range(0..4))?;
                kv.to_embedding(true)?;
                Ok(())
            });
        }
    }
    fz.finish();
}

#[test]
fn pair_and_analogy_files() {
    let mut rng = rng("pair_and_analogy_files");
    let mut fz = Fuzz::new("pair_and_analogy_files");
    let kv = keyed_vectors(&mut rng);
    let words = kv.words().to_vec();
    for case in 0..cases(1500) {
        let pick = |rng: &mut StdRng| words[rng.random_range(0..words.len())].clone();
        let pairs: String = (0..rng.random_range(0..8))
            .map(|_| {
                let (a, b) = (pick(&mut rng), pick(&mut rng));
                let eol = if rng.random() { "\r\n" } else { "\n" };
                format!("{a}\t{b}\t{:.2}{eol}", rng.random_range(0.0..10.0))
            })
            .collect();
        let analogies: String = (0..rng.random_range(0..3))
            .map(|s| {
                let qs: String = (0..rng.random_range(0..5))
                    .map(|_| {
                        let q: Vec<String> = (0..4).map(|_| pick(&mut rng)).collect();
                        q.join(" ") + "\n"
                    })
                    .collect();
                format!(": section{s}\n{qs}")
            })
            .collect();
        for (name, valid) in [("pairs", pairs), ("analogies", analogies)] {
            let input = every_third_valid(&mut rng, case, valid);
            let path = fz.file(name, &input);
            // The file's text, one short vector per line, and a query per analogy.
            fz.load(name, &input, 16, 64 << 10, || match name {
                "pairs" => word2vec::evaluate_pairs(&kv, &path).map(drop),
                _ => word2vec::evaluate_analogies(&kv, &path).map(drop),
            });
        }
    }
    fz.finish();
}

// ------------------------------------------------------------------ safetensors files

fn safetensors_bytes(t: &Tensors) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = t
        .iter()
        .map(|(name, t)| {
            let v = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                t.shape.clone(),
                bytemuck::cast_slice(&t.data),
            )
            .unwrap();
            (name.clone(), v)
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

/// A file from a JSON header and data bytes (the length prefix may be forged too).
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn forged_safetensors(rng: &mut StdRng) -> Vec<u8> {
    let dims = [
        "[0,1000000000000000000]",
        "[4294967296,4294967296,16]",
        "[18446744073709551615,2]",
        "[-1,4]",
        "[2.5,2]",
        "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]",
        "[]",
        "[8,2,1]",
    ];
    let offsets = [
        "[0,4]",
        "[0,400000000000]",
        "[4,0]",
        "[-4,4]",
        "[0,18446744073709551615]",
    ];
    let names = [
        "input",
        "weight_hh_l0",
        "weight_ih_l0",
        "lengths",
        "h0",
        "__metadata__",
    ];
    let dtypes = ["F32", "F64", "I64", "U8", "BOOL", "F16", "C64", "X"];
    let header = format!(
        r#"{{"{}":{{"dtype":"{}","shape":{},"data_offsets":{}}}}}"#,
        names[rng.random_range(0..names.len())],
        dtypes[rng.random_range(0..dtypes.len())],
        dims[rng.random_range(0..dims.len())],
        offsets[rng.random_range(0..offsets.len())]
    );
    let data: Vec<u8> = match rng.random_range(0..3) {
        0 => f32::NAN.to_le_bytes().repeat(16),
        1 => f32::INFINITY.to_le_bytes().repeat(16),
        _ => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
    };
    let mut b = raw_safetensors(&header, &data);
    if rng.random_range(0..4) == 0 {
        // A length prefix past the file, or absurd.
        let n: u64 = [u64::MAX, 1 << 40, b.len() as u64, 0][rng.random_range(0..4)];
        b[..8].copy_from_slice(&n.to_le_bytes());
    }
    b
}

fn stack_files(rng: &mut StdRng) -> (Tensors, Tensors) {
    let cell = CellKind::ALL[rng.random_range(0..CellKind::ALL.len())];
    let (i, h) = (rng.random_range(1..=3), rng.random_range(1..=4));
    let mut cfg = RecurrentConfig::new(cell, i, h);
    cfg.num_layers = rng.random_range(1..=2);
    cfg.bidirectional = rng.random();
    let layer = Recurrent::new(cfg.clone(), rng.random()).unwrap();
    let (t, b) = (rng.random_range(1..=4), rng.random_range(1..=3));
    let mut inputs = Tensors::new();
    inputs.insert(
        "input".into(),
        HostTensor::new(vec![t, b, i], values(rng, t * b * i)).unwrap(),
    );
    if rng.random() {
        let l = (0..b).map(|_| rng.random_range(1..=t) as f32).collect();
        inputs.insert("lengths".into(), HostTensor::new(vec![b], l).unwrap());
    }
    if rng.random() {
        let n = cfg.num_layers * cfg.directions();
        inputs.insert(
            "h0".into(),
            HostTensor::new(vec![n, b, h], values(rng, n * b * h)).unwrap(),
        );
    }
    (layer.params().clone(), inputs)
}

#[test]
fn safetensors_weights_and_inputs() {
    let mut rng = rng("safetensors_weights_and_inputs");
    let mut fz = Fuzz::new("safetensors_weights_and_inputs");
    for case in 0..cases(2000) {
        let (w, x) = stack_files(&mut rng);
        let (w, x) = (safetensors_bytes(&w), safetensors_bytes(&x));
        let (w_in, x_in) = match case % 4 {
            0 => (w, x),
            1 => (mutate(&mut rng, &w), x),
            2 => (w, mutate(&mut rng, &x)),
            _ => {
                if rng.random() {
                    (forged_safetensors(&mut rng), x)
                } else {
                    (w, forged_safetensors(&mut rng))
                }
            }
        };
        // f32 values from at most as many stored bytes, a map of names, a JSON header.
        let (per_byte, fixed) = (24, 16 << 10);
        let weights = fz.load("safetensors weights", &w_in, per_byte, fixed, || {
            parse_safetensors(&w_in)
        });
        let inputs = fz.load("safetensors inputs", &x_in, per_byte, fixed, || {
            parse_safetensors(&x_in)
        });
        if let (Some(w), Some(x)) = (weights, inputs) {
            let cell = if rng.random() {
                Some(CellKind::ALL[rng.random_range(0..CellKind::ALL.len())])
            } else {
                None
            };
            let opts = recur::apps::interop::FileOptions {
                cell,
                batch_first: rng.random(),
            };
            fz.then("forward", &w_in, || {
                recur::apps::interop::forward_tensors(w, &x, opts, &Backend::Cpu)
            });
        }
    }
    fz.finish();
}

// ------------------------------------------------------------------ checkpoints

fn charlm_checkpoint(rng: &mut StdRng) -> Checkpoint {
    let vocab = rng.random_range(2..=6);
    let spec = ModelSpec {
        embedding: Some(EmbeddingSpec {
            input_dim: vocab,
            output_dim: rng.random_range(1..=3),
            padding: None,
            trainable: true,
            init: Default::default(),
        }),
        input_size: 0,
        cell: [CellKind::Lstm, CellKind::Gru, CellKind::RnnTanh][rng.random_range(0..3)],
        hidden_size: rng.random_range(1..=4),
        num_layers: rng.random_range(1..=2),
        bidirectional: false,
        outputs: vocab,
        head: Head::EveryStep,
        loss: Loss::CrossEntropy { ignore_index: None },
        dropout: Default::default(),
    };
    let model = SequenceModel::new(spec.clone(), rng.random()).unwrap();
    let params = model.named_params();
    let optimizer = params
        .iter()
        .map(|(k, v)| (format!("optimizer.{k}.m"), v.clone()))
        .collect();
    let chars: String = "abcdefgh".chars().take(vocab).collect();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("vocab".to_string(), chars);
    Checkpoint {
        spec,
        params,
        optimizer,
        state: Tensors::new(),
        step: rng.random_range(0..100),
        meta,
    }
}

/// Checkpoint metadata forgeries: a spec far larger than the tensors, fields of the wrong
/// kind, a `recur fit` task with absurd sizes.
fn forge_checkpoint(rng: &mut StdRng, mut c: Checkpoint) -> Vec<u8> {
    let huge = [1usize << 40, usize::MAX, 1_000_000_000_000, 0][rng.random_range(0..4)];
    match rng.random_range(0..6) {
        0 => c.spec.hidden_size = huge,
        1 => c.spec.num_layers = huge,
        2 => c.spec.outputs = huge,
        3 => {
            if let Some(e) = c.spec.embedding.as_mut() {
                e.input_dim = huge;
            }
        }
        // A cell whose parameters differ from the ones the file holds.
        4 => c.spec.cell = [CellKind::Gru, CellKind::RnnRelu][rng.random_range(0..2)],
        _ => {
            let fits = [
                r#"{"task":"classifier","classes":[0.0,1.0],"steps":4,"batch":1000000000000000}"#,
                r#"{"task":"classifier","classes":[0.0,1.0],"steps":1000000000000000000,"batch":4}"#,
                r#"{"task":"classifier","classes":[NaN,1.0],"steps":4,"batch":4}"#,
                r#"{"task":"forecaster","window":1000000000000,"mean":0.0,"std":1.0,"batch":2}"#,
                r#"{"task":"forecaster","window":4,"mean":0.0,"std":-1.0,"batch":2}"#,
                r#"{"task":"forecaster","window":4,"mean":0.0,"std":1.0,"batch":-2}"#,
                r#"{"task":"forecaster","window":4,"mean":0.0,"std":1.0,"batch":0}"#,
            ];
            c.meta
                .insert("fit".into(), fits[rng.random_range(0..fits.len())].into());
        }
    }
    let dir = std::env::temp_dir().join(format!("recur-fuzz-forge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{}.safetensors", rng.random::<u32>()));
    c.save(&p).unwrap();
    let b = std::fs::read(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    b
}

fn small_table(rng: &mut StdRng, rows: usize, width: usize) -> Table {
    Table {
        rows: (0..rows)
            .map(|i| {
                let mut r = vec![(i % 2) as f32];
                r.extend(values(rng, width - 1));
                r
            })
            .collect(),
    }
}

#[test]
fn checkpoints_and_fit_models() {
    let mut rng = rng("checkpoints_and_fit_models");
    let mut fz = Fuzz::new("checkpoints_and_fit_models");
    // One saved `recur fit` model to mutate, and the test table it reads.
    let table = small_table(&mut rng, 8, 5);
    let opts = FitOptions {
        hidden: 3,
        batch: 4,
        epochs: 1,
        ..Default::default()
    };
    let fitted = fit::fit_classifier(&table, &table, &opts, &Backend::Cpu, |_, _| {}).unwrap();
    let fit_path = fz.dir.join("fit.safetensors");
    fitted.model.save(&fit_path).unwrap();
    let fit_bytes = std::fs::read(&fit_path).unwrap();
    let source = Path::new("fuzzed.safetensors");
    for case in 0..cases(1500) {
        let base = if case.is_multiple_of(2) {
            let c = charlm_checkpoint(&mut rng);
            let p = fz.dir.join("c.safetensors");
            c.save(&p).unwrap();
            std::fs::read(&p).unwrap()
        } else {
            fit_bytes.clone()
        };
        let input = match case % 5 {
            0 => base,
            1..=3 => mutate(&mut rng, &base),
            _ => {
                let c = if case.is_multiple_of(2) {
                    charlm_checkpoint(&mut rng)
                } else {
                    fitted.model.checkpoint.clone()
                };
                let mut b = forge_checkpoint(&mut rng, c);
                if case % 2 == 1 && rng.random() {
                    b = mutate(&mut rng, &b);
                }
                b
            }
        };
        // Tensors twice (the file's and the model's), the spec and metadata strings.
        let (per_byte, fixed) = (32, 64 << 10);
        let ckpt = fz.load("checkpoint", &input, per_byte, fixed, || {
            Checkpoint::from_bytes(&input, source)
        });
        let model = fz.load("fit model", &input, per_byte, fixed, || {
            FitModel::from_bytes(&input, source)
        });
        if let Some(c) = ckpt {
            fz.then("generate", &input, || charlm::generate(&c, "", 4, 0.7, 1));
        }
        if let Some(m) = model {
            fz.then("fit --model", &input, || m.test(&table, &Backend::Cpu));
        }
    }
    fz.finish();
}

// ------------------------------------------------------------------ text files

fn corpus(rng: &mut StdRng) -> String {
    (0..rng.random_range(0..12))
        .map(|_| {
            let line: Vec<String> = (0..rng.random_range(0..10)).map(|_| word(rng)).collect();
            let eol = ["\n", "\r\n", ""][rng.random_range(0..3)];
            line.join(" ") + eol
        })
        .collect()
}

#[test]
fn corpora() {
    let mut rng = rng("corpora");
    let mut fz = Fuzz::new("corpora");
    for case in 0..cases(1500) {
        let valid = corpus(&mut rng);
        let input = every_third_valid(&mut rng, case, valid);
        let path = fz.file("corpus.txt", &input);
        // The reader's 1 MiB buffer, one line, the counts of the distinct words.
        let vocab = fz.load("corpus vocabulary", &input, 64, 2 << 20, || {
            Vocab::scan(&path, 1, None)
        });
        if vocab.is_some() && case.is_multiple_of(5) {
            let cfg = word2vec::Config {
                size: 3,
                epochs: 1,
                threads: 1,
                min_count: 1,
                window: 2,
                ..Default::default()
            };
            fz.then("word2vec training", &input, || {
                let r = word2vec::train(&path, &cfg);
                if let Err(e) = &r {
                    assert!(!format!("{e:#}").contains("panicked"), "{e:#}");
                }
                r
            });
        }
    }
    fz.finish();
}

fn csv(rng: &mut StdRng) -> String {
    let sep = [",", "\t", " "][rng.random_range(0..3)];
    let width = rng.random_range(1..=5);
    (0..rng.random_range(0..10))
        .map(|i| {
            let mut fields = vec![if width > 1 {
                (i % 3).to_string()
            } else {
                format!("{:.3}", rng.random_range(-5.0..5.0))
            }];
            fields.extend((1..width).map(|_| format!("{:.3}", rng.random_range(-5.0..5.0))));
            let eol = if rng.random() { "\r\n" } else { "\n" };
            fields.join(sep) + eol
        })
        .collect()
}

#[test]
fn csv_data_for_fit() {
    let mut rng = rng("csv_data_for_fit");
    let mut fz = Fuzz::new("csv_data_for_fit");
    for case in 0..cases(2000) {
        let valid = csv(&mut rng);
        let input = every_third_valid(&mut rng, case, valid);
        let path = fz.file("data.csv", &input);
        // The text, the fields of a line, a row of f32 and a vector per row.
        let table = fz.load("csv table", &input, 48, 16 << 10, || fit::read_table(&path));
        if let Some(t) = table {
            if case.is_multiple_of(4) {
                let opts = FitOptions {
                    hidden: 2,
                    batch: rng.random_range(1..=3),
                    epochs: 1,
                    window: rng.random_range(1..=3),
                    ..Default::default()
                };
                fz.then("fit", &input, || {
                    if t.rows[0].len() == 1 {
                        fit::fit_forecaster(&t, &t, &opts, &Backend::Cpu, |_, _| {})
                    } else {
                        fit::fit_classifier(&t, &t, &opts, &Backend::Cpu, |_, _| {})
                    }
                });
            }
        }
    }
    fz.finish();
}

#[test]
fn language_model_texts() {
    let mut rng = rng("language_model_texts");
    let mut fz = Fuzz::new("language_model_texts");
    let out = fz.dir.join("model.safetensors");
    for case in 0..cases(1200) {
        let valid = corpus(&mut rng);
        let input = every_third_valid(&mut rng, case, valid);
        let path = fz.file("text.txt", &input);
        // The text, its characters and their ids, and a batch of them.
        let text = fz.load("language-model text", &input, 48, 16 << 10, || {
            let text = charlm::read_text(&path)?;
            let vocab = CharVocab::from_text(&text)?;
            let ids = vocab.encode(&text)?;
            let streams = Streams::new(ids, 2, 3, "training")?;
            streams.chunk(0);
            Ok(text)
        });
        if let (Some(text), 0) = (text, case % 8) {
            let opts = CharLmOptions {
                hidden: 2,
                embed: 2,
                batch: 2,
                seq_len: 3,
                train_steps: 2,
                eval_every: 1,
                ..Default::default()
            };
            fz.then("recur train", &input, || {
                charlm::train(&text, &opts, &out, &Backend::Cpu, |_| {})
            });
        }
    }
    fz.finish();
}
