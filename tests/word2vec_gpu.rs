//! The GPU nearest-neighbour scan of word vectors against its CPU twin, and bad input.

mod common;

use rand::Rng;
use recur::check::rel_error;
use recur::cpu::word2vec::{normalize_rows, top_k_cosine};
use recur::gpu::CosineIndex;
use recur::ops::CosineTopK;

#[test]
fn gpu_unit_vectors_and_top_k_match_the_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("w2v_gpu_top_k");
    // Sizes around the 1024-candidate chunk so one, two and three selection passes run.
    for rows in [
        1usize,
        7,
        rng.random_range(2..1500),
        rng.random_range(1025..5000),
        70_000,
    ] {
        let dim = rng.random_range(1..40);
        let mut data = common::random_vec(&mut rng, rows * dim);
        if rows > 3 {
            data[2 * dim..3 * dim].iter_mut().for_each(|x| *x = 0.0); // a zero row stays zero
        }
        let max_k = rows.min(256);
        let k = [1, max_k, rng.random_range(1..=max_k)][rng.random_range(0..3)];
        let spec = CosineTopK::new(rows, dim, k);
        let index = CosineIndex::new(&gpu, &spec, &data, 4).unwrap();
        let unit_cpu = normalize_rows(&data, dim);
        let unit_gpu = index.unit().to_vec().unwrap();
        let e = rel_error(&common::to_f64(&unit_gpu), &common::to_f64(&unit_cpu));
        assert!(
            e < 1e-6,
            "rows {rows} dim {dim}: unit vectors rel error {e}"
        );
        for _ in 0..2 {
            let mut query = common::random_vec(&mut rng, dim);
            let n: f32 = query.iter().map(|x| x * x).sum::<f32>().sqrt();
            query.iter_mut().for_each(|x| *x /= n);
            let n_ex = rng.random_range(0..=4.min(rows - k));
            let exclude: Vec<usize> = (0..n_ex).map(|i| (i * 7919) % rows).collect();
            let mut distinct = exclude.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if rows - distinct.len() < k {
                continue;
            }
            let cpu = top_k_cosine(&unit_cpu, dim, &query, k, &exclude);
            let gpu_top = index.top_k(&query, &exclude).unwrap();
            assert_eq!(gpu_top.len(), k);
            // The GPU's rows, scored on the CPU, are the CPU's best scores (a near tie may
            // swap two rows), and each GPU score agrees with its row's CPU score.
            let rescored: Vec<f64> = gpu_top
                .iter()
                .map(|&(r, _)| {
                    recur::word2vec::grad::dot(&unit_cpu[r * dim..(r + 1) * dim], &query) as f64
                })
                .collect();
            let want: Vec<f64> = cpu.iter().map(|&(_, s)| s as f64).collect();
            let got: Vec<f64> = gpu_top.iter().map(|&(_, s)| s as f64).collect();
            assert!(
                rel_error(&rescored, &want) < 1e-5,
                "rows {rows} k {k}: {gpu_top:?} vs {cpu:?}"
            );
            assert!(
                rel_error(&got, &rescored) < 1e-5,
                "rows {rows} k {k}: scores"
            );
            assert!(
                gpu_top.iter().all(|(r, _)| !exclude.contains(r)),
                "an excluded row came back"
            );
            let mut rows_seen: Vec<usize> = gpu_top.iter().map(|&(r, _)| r).collect();
            rows_seen.sort_unstable();
            rows_seen.dedup();
            assert_eq!(rows_seen.len(), k, "a row came back twice");
            // Without near ties the order is exactly the CPU's.
            let gaps = want.windows(2).all(|w| (w[0] - w[1]).abs() > 1e-5);
            if gaps {
                let a: Vec<usize> = gpu_top.iter().map(|x| x.0).collect();
                let b: Vec<usize> = cpu.iter().map(|x| x.0).collect();
                assert_eq!(a, b, "rows {rows} k {k}");
            }
        }
    }
}

#[test]
fn gpu_top_k_rejects_bad_input() {
    let Some(gpu) = common::gpu() else { return };
    let data = vec![1.0f32; 12];
    let err = |r: anyhow::Result<CosineIndex>| format!("{:#}", r.err().expect("an error"));
    assert!(err(CosineIndex::new(&gpu, &CosineTopK::new(4, 3, 0), &data, 1)).contains("k = 0"));
    assert!(err(CosineIndex::new(
        &gpu,
        &CosineTopK::new(4, 3, 257),
        &data,
        1
    ))
    .contains("k = 257"));
    assert!(
        err(CosineIndex::new(&gpu, &CosineTopK::new(5, 3, 1), &data, 1))
            .contains("12 values for 5 rows")
    );
    let mut nan = data.clone();
    nan[7] = f32::NAN;
    assert!(
        err(CosineIndex::new(&gpu, &CosineTopK::new(4, 3, 1), &nan, 1)).contains("row 2 holds NaN")
    );
    let index = CosineIndex::new(&gpu, &CosineTopK::new(4, 3, 2), &data, 2).unwrap();
    let q = [1.0, 0.0, 0.0];
    let e = |r: anyhow::Result<Vec<(usize, f32)>>| format!("{:#}", r.expect_err("an error"));
    assert!(e(index.top_k(&q[..2], &[])).contains("query of 2 values: expected 3"));
    assert!(e(index.top_k(&q, &[4])).contains("excluded row 4"));
    assert!(e(index.top_k(&q, &[0, 1, 2])).contains("at most 2"));
    assert!(e(index.top_k(&q, &[0, 1, 0])).contains("at most 2"));
    assert!(e(index.top_k(&[f32::NAN, 0.0, 0.0], &[])).contains("non-finite"));
    let three = CosineIndex::new(&gpu, &CosineTopK::new(4, 3, 3), &data, 2).unwrap();
    assert!(e(three.top_k(&q, &[0, 1])).contains("not enough rows"));
}

#[test]
fn gpu_top_k_breaks_ties_to_the_lower_row_as_the_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("w2v_gpu_ties");
    // Many copies of a few vectors: long runs of equal cosines across selection chunks.
    let (rows, dim, distinct) = (rng.random_range(2000..4000), 8, 3);
    let base = common::random_vec(&mut rng, distinct * dim);
    let data: Vec<f32> = (0..rows)
        .flat_map(|r| base[(r % distinct) * dim..(r % distinct + 1) * dim].to_vec())
        .collect();
    let k = rng.random_range(1..=256);
    let index = CosineIndex::new(&gpu, &CosineTopK::new(rows, dim, k), &data, 2).unwrap();
    let unit = normalize_rows(&data, dim);
    let query = unit[..dim].to_vec();
    let exclude = [0, 3];
    let cpu: Vec<usize> = top_k_cosine(&unit, dim, &query, k, &exclude)
        .iter()
        .map(|x| x.0)
        .collect();
    let got: Vec<usize> = index
        .top_k(&query, &exclude)
        .unwrap()
        .iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(got, cpu);
}

#[test]
fn keyed_vectors_most_similar_on_the_gpu_matches_the_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("w2v_gpu_most_similar");
    let (rows, dim) = (rng.random_range(50..3000), rng.random_range(2..50));
    let words: Vec<String> = (0..rows).map(|i| format!("w{i}")).collect();
    let kv =
        recur::word2vec::KeyedVectors::new(words, dim, common::random_vec(&mut rng, rows * dim))
            .unwrap();
    let index = kv.gpu_index(&gpu, 10).unwrap();
    for (pos, neg) in [(vec!["w0"], vec![]), (vec!["w1", "w2"], vec!["w3"])] {
        let cpu = kv.most_similar(&pos, &neg, 10).unwrap();
        let got = kv.most_similar_gpu(&index, &pos, &neg).unwrap();
        let a: Vec<f64> = cpu.iter().map(|x| x.1 as f64).collect();
        let b: Vec<f64> = got.iter().map(|x| x.1 as f64).collect();
        assert!(rel_error(&b, &a) < 1e-5, "{got:?} vs {cpu:?}");
    }
    let e = format!(
        "{:#}",
        kv.most_similar_gpu(&index, &["nope"], &[]).unwrap_err()
    );
    assert!(e.contains("\"nope\" is not in the vocabulary"), "{e}");
}

#[test]
fn analogy_evaluation_on_the_gpu_matches_the_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("w2v_gpu_analogies");
    let (rows, dim) = (rng.random_range(20..300), rng.random_range(2..30));
    let words: Vec<String> = (0..rows).map(|i| format!("w{i}")).collect();
    let kv =
        recur::word2vec::KeyedVectors::new(words, dim, common::random_vec(&mut rng, rows * dim))
            .unwrap();
    let mut text = String::from(": one\n");
    for q in 0..60 {
        if q == 30 {
            text.push_str(": two\n");
        }
        // Row `rows + 5` is out of the vocabulary now and then.
        let w: Vec<String> = (0..4)
            .map(|_| format!("w{}", rng.random_range(0..rows + 5)))
            .collect();
        text.push_str(&(w.join(" ") + "\n"));
    }
    let dir = std::env::temp_dir().join(format!("recur-w2v-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("q.txt");
    std::fs::write(&path, text).unwrap();
    let cpu = recur::word2vec::evaluate_analogies(&kv, &path).unwrap();
    let got = recur::word2vec::evaluate_analogies_gpu(&kv, &gpu, &path).unwrap();
    for (a, b) in cpu
        .sections
        .iter()
        .chain([&cpu.overall])
        .zip(got.sections.iter().chain([&got.overall]))
    {
        assert_eq!(
            (a.correct, a.total, a.skipped),
            (b.correct, b.total, b.skipped),
            "{}",
            a.name
        );
    }
    // The command line's --gpu flag gives the CPU's answer.
    let vectors = dir.join("v.bin");
    recur::word2vec::save_binary(&kv, &vectors).unwrap();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(["similar", vectors.to_str().unwrap(), "w3", "-k", "3"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().last().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(&["--gpu"]), run(&[]));
}
