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
                    recur::cpu::word2vec::dot(&unit_cpu[r * dim..(r + 1) * dim], &query) as f64
                })
                .collect();
            let want: Vec<f64> = cpu.iter().map(|&(_, s)| s as f64).collect();
            let got: Vec<f64> = gpu_top.iter().map(|&(_, s)| s as f64).collect();
            assert!(
                rel_error(&rescored, &want) < 1e-5,
                "rows {rows} k {k}: {gpu_top:?} vs {cpu:?}"
            );
            // Each score is a dot product of unit vectors: its rounding error scales with
            // |a| |b| = 1, not with the score, which can be near zero (one row: a random
            // cosine of 1e-3 carries 1e-8 of f32 rounding). So the error is taken relative to
            // that scale.
            let worst = got
                .iter()
                .zip(&rescored)
                .map(|(g, r)| (g - r).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < 1e-5,
                "rows {rows} k {k}: scores {got:?} vs {rescored:?}"
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
    let err = |r: recur::Result<CosineIndex>| format!("{:#}", r.err().expect("an error"));
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
    let e = |r: recur::Result<Vec<(usize, f32)>>| format!("{:#}", r.expect_err("an error"));
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

// ---------------------------------------------------------------- training kernels

use recur::cpu::word2vec as twin;
use recur::gpu::device::LLVMPIPE_LOOP_BUDGET;
use recur::gpu::word2vec_train::{GradientKernel, PlanOptions};
use recur::gpu::{Recorder, TrainPlan};
use recur::ops::word2vec_train::{BatchPacker, PackedBatch, TrainBatch, TrainOutput, TrainSpec};
use recur::word2vec::{Arch, Config, GpuTrainOptions, Output};

const KERNELS: [GradientKernel; 2] = [GradientKernel::Rows, GradientKernel::PerItem];

/// A random batch over small matrices, so rows repeat within it: items of 1 to 6 input rows
/// and (sampled) 0 to `max_targets` targets with random labels, or (softmax) one word.
fn random_batch(
    rng: &mut impl Rng,
    spec: &TrainSpec,
    items: usize,
    max_targets: usize,
) -> TrainBatch {
    let mut batch = TrainBatch::default();
    for _ in 0..items {
        let inputs: Vec<u32> = (0..rng.random_range(1..=6))
            .map(|_| rng.random_range(0..spec.in_rows as u32))
            .collect();
        let targets: Vec<(u32, bool)> = match spec.output {
            TrainOutput::Sampled => (0..rng.random_range(0..=max_targets))
                .map(|_| {
                    (
                        rng.random_range(0..spec.out_rows as u32),
                        rng.random_bool(0.3),
                    )
                })
                .collect(),
            TrainOutput::Softmax => vec![(rng.random_range(0..spec.out_rows as u32), true)],
        };
        batch.push(&inputs, targets);
    }
    batch
}

/// Random sizes for a kernel check: vector sizes around the 32 lanes a row is spread over
/// (one element per lane, several, a partial last round), output layers around the chunk of
/// 8 rows scored per reduction, items around the 8 per workgroup.
fn random_spec(rng: &mut impl Rng, output: TrainOutput, row_cap: u32) -> (TrainSpec, usize) {
    let (in_rows, out_rows) = (rng.random_range(1..30), rng.random_range(1..42));
    let dim = [1, 7, 8, 31, 32, 33, 64, 65, rng.random_range(2..300)][rng.random_range(0..9)];
    let items = rng.random_range(1..60);
    let spec = TrainSpec {
        in_rows,
        out_rows,
        dim,
        output,
        max_items: items + 3,
        max_inputs: 6 * (items + 3),
        max_targets: 20 * (items + 3) + 1,
        row_cap,
    };
    (spec, items)
}

fn rel(gpu: &[f32], cpu: &[f32]) -> f64 {
    rel_error(&common::to_f64(gpu), &common::to_f64(cpu))
}

/// Element-wise change from `before` (the update a kernel applied).
fn delta(after: &[f32], before: &[f32]) -> Vec<f32> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// Runs one random batch through the GPU kernels one at a time and through their CPU twins:
/// the gradient kernel from the same weights, then the apply kernel from the GPU's own
/// gradients (so each kernel is checked on its own). The batch goes into a random one of
/// three batch slots, so the slots' offsets are checked too.
fn check_train_kernels(
    gpu: &recur::Gpu,
    rng: &mut rand::rngs::StdRng,
    output: TrainOutput,
    row_cap: u32,
    kernel: GradientKernel,
) {
    let (spec, items) = random_spec(rng, output, row_cap);
    check_train_kernels_on(gpu, rng, &spec, items, kernel);
}

/// The gradient and apply kernels of `spec` with a random batch of `items` items against
/// their CPU twins, as [`check_train_kernels`].
fn check_train_kernels_on(
    gpu: &recur::Gpu,
    rng: &mut rand::rngs::StdRng,
    spec: &TrainSpec,
    items: usize,
    kernel: GradientKernel,
) {
    let (spec, output, row_cap) = (*spec, spec.output, spec.row_cap);
    let dim = spec.dim;
    let (in_rows, out_rows) = (spec.in_rows, spec.out_rows);
    let slot = rng.random_range(0..3);
    let what = format!(
        "{kernel:?} {output:?} rows {in_rows}/{out_rows} dim {dim} items {items} cap {row_cap} \
         slot {slot}"
    );
    let batch = random_batch(rng, &spec, items, 20);
    let mut packed = PackedBatch::default();
    BatchPacker::default()
        .pack(&spec, &batch, &mut packed)
        .unwrap();
    // A learning rate well above word2vec's so every update is large next to the weights'
    // rounding: the comparisons below are of the updates themselves.
    let alpha = 0.5;
    let syn0 = common::random_vec(rng, in_rows * dim);
    let syn1 = common::random_vec(rng, out_rows * dim);
    let options = PlanOptions {
        gradient_kernel: kernel,
        batch_slots: 3,
        loss_slots: 4,
    };
    let mut plan = TrainPlan::new(gpu, &spec, &syn0, &syn1, &options).unwrap();
    assert_eq!(plan.options().batch_slots, 3);
    plan.write_batch(slot, &packed, alpha, 2).unwrap();

    let grad_len = match output {
        TrainOutput::Sampled => batch.target_slots(),
        TrainOutput::Softmax => items * out_rows,
    };
    let (mut hidden, mut hidden_grad) = (vec![f32::NAN; items * dim], vec![f32::NAN; items * dim]);
    let (mut grads, mut item_loss) = (vec![f32::NAN; grad_len], vec![f32::NAN; items]);
    twin::gradients_for(output)(
        &spec,
        &packed,
        alpha,
        &syn0,
        &syn1,
        &mut hidden,
        &mut hidden_grad,
        &mut grads,
        &mut item_loss,
    );
    let mut rec = Recorder::new(gpu);
    plan.record_gradients(slot, &mut rec).unwrap();
    rec.submit().unwrap();
    // The plan's written-only buffers start as NaN, so an unwritten element fails here.
    let g_hidden = plan.hidden().read_range(0, items * dim).unwrap();
    let g_hidden_grad = plan.hidden_grad().read_range(0, items * dim).unwrap();
    let g_grads = plan.grads().read_range(0, grad_len).unwrap();
    let g_loss = plan.item_loss().read_range(0, items).unwrap();
    for (name, g, c) in [
        ("hidden", &g_hidden, &hidden),
        ("hidden gradient", &g_hidden_grad, &hidden_grad),
        ("output gradients", &g_grads, &grads),
        ("item loss", &g_loss, &item_loss),
    ] {
        let e = rel(g, c);
        // An all-zero reference (no targets anywhere) must be matched exactly.
        assert!(e < 1e-5 || (g == c), "{what}: {name} rel error {e}");
    }

    // The apply kernel, from the GPU's gradients.
    let (mut syn0_cpu, mut syn1_cpu) = (syn0.clone(), syn1.clone());
    let loss_cpu = twin::apply_for(output)(
        &spec,
        &packed,
        &g_grads,
        &g_hidden,
        &g_hidden_grad,
        &g_loss,
        &mut syn0_cpu,
        &mut syn1_cpu,
    );
    let mut rec = Recorder::new(gpu);
    plan.record_apply(slot, &mut rec).unwrap();
    rec.submit().unwrap();
    let syn0_gpu = plan.syn0().to_vec().unwrap();
    let syn1_gpu = plan.syn1().to_vec().unwrap();
    for (name, after_gpu, after_cpu, before) in [
        ("input update", &syn0_gpu, &syn0_cpu, &syn0),
        ("output update", &syn1_gpu, &syn1_cpu, &syn1),
    ] {
        let (dg, dc) = (delta(after_gpu, before), delta(after_cpu, before));
        let e = rel(&dg, &dc);
        assert!(e < 1e-5 || dg == dc, "{what}: {name} rel error {e}");
        // Rows the batch does not touch are left exactly as they were.
        for (r, (a, b)) in dg.chunks(dim).zip(dc.chunks(dim)).enumerate() {
            if b.iter().all(|&x| x == 0.0) {
                assert!(
                    a.iter().all(|&x| x == 0.0),
                    "{what}: {name}: row {r} changed"
                );
            }
        }
    }
    let slots = plan.loss_slots().to_vec().unwrap();
    assert!(
        slots[0].is_nan() && slots[1].is_nan() && slots[3].is_nan(),
        "{what}: {slots:?}"
    );
    let e = ((slots[2] - loss_cpu) / loss_cpu.abs().max(1e-30)).abs();
    assert!(
        e < 1e-5 || slots[2] == loss_cpu,
        "{what}: loss {} vs {loss_cpu}",
        slots[2]
    );
}

#[test]
fn sampled_train_kernels_match_their_cpu_twins() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("w2v_train_sampled");
    for kernel in KERNELS {
        for row_cap in [0, 0, 0, 0, 3, 1] {
            check_train_kernels(&gpu, &mut rng, TrainOutput::Sampled, row_cap, kernel);
        }
    }
}

#[test]
fn softmax_train_kernels_match_their_cpu_twins() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("w2v_train_softmax");
    for kernel in KERNELS {
        for row_cap in [0, 0, 0, 0, 5] {
            check_train_kernels(&gpu, &mut rng, TrainOutput::Softmax, row_cap, kernel);
        }
    }
}

#[test]
fn the_gradient_kernels_stay_within_llvmpipes_loop_budget() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("the_gradient_kernels_stay_within_llvmpipes_loop_budget");
    // The full softmax over 1,000 rows of size 100: one invocation of the per-item kernel
    // walks them twice, about 203,000 loop iterations, so on llvmpipe it stopped early
    // (hidden gradient off by 100%); the row kernel makes about 21,000.
    let spec = TrainSpec {
        in_rows: 30,
        out_rows: 1000,
        dim: 100,
        output: TrainOutput::Softmax,
        max_items: 20,
        max_inputs: 120,
        max_targets: 20,
        row_cap: 0,
    };
    assert!(GradientKernel::PerItem.loop_iterations(&spec, 0, 0) > 200_000);
    assert!(GradientKernel::Rows.loop_iterations(&spec, 6, 0) < LLVMPIPE_LOOP_BUDGET);
    let chosen = GradientKernel::for_spec(&gpu, &spec);
    if gpu.is_llvmpipe() {
        assert_eq!(chosen, GradientKernel::Rows);
        // Asked for, the per-item kernel is an error naming the sizes, before allocating.
        let options = PlanOptions {
            gradient_kernel: GradientKernel::PerItem,
            ..PlanOptions::for_adapter(&gpu)
        };
        let syn0 = vec![0.0; 30 * 100];
        let syn1 = vec![0.0; 1000 * 100];
        let e = TrainPlan::new(&gpu, &spec, &syn0, &syn1, &options)
            .err()
            .expect("the per-item kernel past the loop budget");
        let text = e.to_string();
        for part in ["1000 output rows", "size 100", "PerItem", "llvmpipe"] {
            assert!(text.contains(part), "{text}");
        }
    } else {
        assert_eq!(chosen, GradientKernel::for_adapter(&gpu));
    }
    check_train_kernels_on(&gpu, &mut rng, &spec, 17, chosen);

    // Sampled outputs: an item's targets are known only with its batch. An item of 200
    // targets at size 200 makes the per-item kernel loop about 81,000 times.
    let sampled = TrainSpec {
        out_rows: 50,
        dim: 200,
        output: TrainOutput::Sampled,
        max_targets: 400,
        ..spec
    };
    let options = PlanOptions {
        gradient_kernel: GradientKernel::PerItem,
        ..PlanOptions::for_adapter(&gpu)
    };
    let mut plan = TrainPlan::new(
        &gpu,
        &sampled,
        &vec![0.0; 30 * 200],
        &vec![0.0; 50 * 200],
        &options,
    )
    .unwrap();
    let mut batch = TrainBatch::default();
    batch.push(&[1, 2], vec![(3, true); 10]);
    batch.push(&[4], vec![(5, false); 200]);
    let mut packed = PackedBatch::default();
    BatchPacker::default()
        .pack(&sampled, &batch, &mut packed)
        .unwrap();
    let written = plan.write_batch(0, &packed, 0.1, 0);
    if gpu.is_llvmpipe() {
        let text = written
            .expect_err("an item past the loop budget")
            .to_string();
        assert!(
            text.contains("item 1 (1 input rows, 200 targets)"),
            "{text}"
        );
    } else {
        written.unwrap();
    }
}

/// Several random batches recorded into one submit, each in its own slot, against the same
/// batches submitted one at a time (the same bits: a batch sees every earlier batch's update
/// however they were submitted) and against the CPU twins run batch after batch.
#[test]
fn batches_in_one_submit_run_in_order_as_one_submit_each() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("w2v_train_one_submit");
    for (kernel, output) in [
        (GradientKernel::Rows, TrainOutput::Sampled),
        (GradientKernel::PerItem, TrainOutput::Sampled),
        (GradientKernel::Rows, TrainOutput::Softmax),
        (GradientKernel::PerItem, TrainOutput::Softmax),
    ] {
        let row_cap = rng.random_range(0..4);
        let (spec, items) = random_spec(&mut rng, output, row_cap);
        let n = rng.random_range(2..6);
        let what = format!("{kernel:?} {output:?} dim {} {n} batches", spec.dim);
        let mut packer = BatchPacker::default();
        let batches: Vec<PackedBatch> = (0..n)
            .map(|_| {
                let items = rng.random_range(1..=items);
                let mut packed = PackedBatch::default();
                let batch = random_batch(&mut rng, &spec, items, 12);
                packer.pack(&spec, &batch, &mut packed).unwrap();
                packed
            })
            .collect();
        // A learning rate low enough that n steps stay near the twins' rounding. A batch adds
        // up one update per item, and with few output rows every item moves the same rows: a
        // rate not divided by the items overshoots (losses rising from 1 to 35 in 5 batches at
        // seed 1795943568722836774), and an unstable trajectory amplifies rounding each step.
        let alphas: Vec<f32> = (0..n)
            .map(|k| rng.random_range(0.01..0.1) / batches[k].items() as f32)
            .collect();
        let syn0 = common::random_vec(&mut rng, spec.in_rows * spec.dim);
        let syn1 = common::random_vec(&mut rng, spec.out_rows * spec.dim);
        let plan = |slots| {
            let options = PlanOptions {
                gradient_kernel: kernel,
                batch_slots: slots,
                loss_slots: n,
            };
            TrainPlan::new(&gpu, &spec, &syn0, &syn1, &options).unwrap()
        };
        let mut together = plan(n);
        let mut rec = Recorder::new(&gpu);
        for (k, b) in batches.iter().enumerate() {
            together.write_batch(k, b, alphas[k], k).unwrap();
            together.record(k, &mut rec).unwrap();
        }
        // A slot recorded into work not yet submitted cannot take another batch.
        let e = together.write_batch(0, &batches[0], 0.1, 0).unwrap_err();
        assert!(format!("{e:#}").contains("not yet submitted"), "{e:#}");
        rec.submit().unwrap();
        let mut apart = plan(1);
        for (k, b) in batches.iter().enumerate() {
            apart.write_batch(0, b, alphas[k], k).unwrap();
            let mut rec = Recorder::new(&gpu);
            apart.record(0, &mut rec).unwrap();
            rec.submit().unwrap();
        }
        for (name, a, b) in [
            ("input", together.syn0(), apart.syn0()),
            ("output", together.syn1(), apart.syn1()),
            ("losses", together.loss_slots(), apart.loss_slots()),
        ] {
            let (a, b) = (a.to_vec().unwrap(), b.to_vec().unwrap());
            let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{what}: {name} differ");
        }
        let (mut syn0_cpu, mut syn1_cpu) = (syn0.clone(), syn1.clone());
        let mut losses = Vec::new();
        for (k, b) in batches.iter().enumerate() {
            let (ni, d) = (b.items(), spec.dim);
            let grad_len = match output {
                TrainOutput::Sampled => b.layout.target_slots(),
                TrainOutput::Softmax => ni * spec.out_rows,
            };
            let (mut h, mut hg) = (vec![f32::NAN; ni * d], vec![f32::NAN; ni * d]);
            let (mut g, mut l) = (vec![f32::NAN; grad_len], vec![f32::NAN; ni]);
            twin::gradients_for(output)(
                &spec, b, alphas[k], &syn0_cpu, &syn1_cpu, &mut h, &mut hg, &mut g, &mut l,
            );
            losses.push(twin::apply_for(output)(
                &spec,
                b,
                &g,
                &h,
                &hg,
                &l,
                &mut syn0_cpu,
                &mut syn1_cpu,
            ));
        }
        for (name, gpu_after, cpu_after, before) in [
            ("input", together.syn0().to_vec().unwrap(), syn0_cpu, &syn0),
            ("output", together.syn1().to_vec().unwrap(), syn1_cpu, &syn1),
        ] {
            let e = rel(&delta(&gpu_after, before), &delta(&cpu_after, before));
            assert!(e < 1e-4, "{what}: {name} change rel error {e}");
        }
        let e = rel(&together.loss_slots().to_vec().unwrap(), &losses);
        assert!(e < 1e-5, "{what}: losses rel error {e}");
    }
}

#[test]
fn the_packed_batch_indexes_every_slot_once_in_item_order() {
    let mut rng = common::rng("w2v_train_index");
    let spec = TrainSpec {
        in_rows: 9,
        out_rows: 5,
        dim: 1,
        output: TrainOutput::Sampled,
        max_items: 40,
        max_inputs: 240,
        max_targets: 440,
        row_cap: 0,
    };
    let batch = random_batch(&mut rng, &spec, 40, 11);
    let mut packed = PackedBatch::default();
    BatchPacker::default()
        .pack(&spec, &batch, &mut packed)
        .unwrap();
    // Output index: every target slot exactly once, under its own row, slots increasing.
    let mut seen = vec![false; batch.target_slots()];
    let mut rows = Vec::new();
    for seg in packed.out_segments() {
        rows.push(seg.row);
        let entries: Vec<(usize, usize)> =
            (seg.start..seg.end).map(|e| packed.out_entry(e)).collect();
        assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "{entries:?}");
        for (slot, item) in entries {
            assert!(!seen[slot]);
            seen[slot] = true;
            let (_, row, _) = packed.targets(item).find(|t| t.0 == slot).unwrap();
            assert_eq!(row, seg.row);
        }
    }
    assert!(seen.iter().all(|&s| s));
    rows.sort_unstable();
    rows.dedup();
    assert_eq!(
        rows.len(),
        packed.layout.out_unique as usize,
        "distinct rows"
    );
    // Input index: each item once per input slot naming the row.
    let mut count = vec![0usize; batch.len()];
    for seg in packed.in_segments() {
        for e in seg.start..seg.end {
            let b = packed.in_entry(e);
            assert!(packed.inputs(b).contains(&seg.row));
            count[b] += 1;
        }
    }
    for (b, &c) in count.iter().enumerate() {
        assert_eq!(c, packed.inputs(b).len(), "item {b}");
    }
}

#[test]
fn bad_batches_and_sizes_are_errors_naming_the_value() {
    let spec = TrainSpec {
        in_rows: 4,
        out_rows: 3,
        dim: 2,
        output: TrainOutput::Sampled,
        max_items: 2,
        max_inputs: 4,
        max_targets: 4,
        row_cap: 0,
    };
    let pack = |b: &TrainBatch| {
        let mut p = PackedBatch::default();
        BatchPacker::default().pack(&spec, b, &mut p).map(|_| p)
    };
    let err = |r: recur::Result<PackedBatch>| format!("{:#}", r.expect_err("an error"));
    let mut b = TrainBatch::default();
    b.push(&[4], [(0, true)]);
    assert!(err(pack(&b)).contains("input row 4: expected below 4"));
    b.clear();
    b.push(&[0], [(3, true)]);
    assert!(err(pack(&b)).contains("output row 3: expected below 3"));
    b.clear();
    b.push(&[], [(0, true)]);
    assert!(err(pack(&b)).contains("item 0 has no input rows"));
    b.clear();
    for _ in 0..3 {
        b.push(&[0], [(0, true)]);
    }
    assert!(err(pack(&b)).contains("a batch of 3 items"));
    let huge = TrainSpec {
        dim: 1 << 30,
        ..spec
    };
    assert!(format!("{:#}", huge.validate().unwrap_err()).contains("size 1073741824"));

    let Some(gpu) = common::gpu() else { return };
    // A size the adapter cannot bind: an error naming it before anything is allocated.
    let dir = std::env::temp_dir().join(format!("recur-w2v-gpu-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = common::planted::corpus(&dir);
    let max = gpu.max_binding_bytes() as usize;
    let size = (max / 4 / 16 + 1).min(u32::MAX as usize / 16 - 1);
    let cfg = Config {
        size,
        min_count: 1,
        ..Config::default()
    };
    let e = format!(
        "{:#}",
        recur::word2vec::train_gpu(&corpus, &cfg, &gpu).unwrap_err()
    );
    assert!(e.contains(&format!("size {size}")), "{e}");
}

// ---------------------------------------------------------------- the GPU trainer

fn small_gpu_config(arch: Arch, output: Output) -> Config {
    Config {
        arch,
        output,
        size: 16,
        window: 3,
        min_count: 1,
        sample: 0.0,
        epochs: 5,
        seed: 5,
        ..Config::default()
    }
}

/// Trains with the gradient kernel and batches per submit given.
fn train_using(
    corpus: &std::path::Path,
    cfg: &Config,
    gpu: &recur::Gpu,
    gradient_kernel: GradientKernel,
    batches_per_submit: usize,
) -> (recur::word2vec::KeyedVectors, recur::word2vec::TrainReport) {
    let vocab = recur::word2vec::Vocab::scan(corpus, cfg.min_count, cfg.max_vocab).unwrap();
    let options = GpuTrainOptions {
        gradient_kernel,
        batches_per_submit,
    };
    recur::word2vec::train_with_vocab_gpu_using(corpus, &vocab, cfg, gpu, &options).unwrap()
}

#[test]
fn gpu_trainer_repeats_bit_for_bit_for_a_seed() {
    let Some(gpu) = common::gpu() else { return };
    let dir = std::env::temp_dir().join(format!("recur-w2v-gpu-repeat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = common::planted::corpus(&dir);
    let cfg = Config {
        sample: 1e-2,
        epochs: 2,
        gpu_batch: 64,
        ..small_gpu_config(Arch::SkipGram, Output::Negative(3))
    };
    let mut runs = Vec::new();
    for kernel in KERNELS {
        let (a, ra) = train_using(&corpus, &cfg, &gpu, kernel, 32);
        let (b, rb) = train_using(&corpus, &cfg, &gpu, kernel, 32);
        assert_eq!(a.data(), b.data(), "{kernel:?}");
        assert_eq!(ra.epoch_loss, rb.epoch_loss, "{kernel:?}");
        assert_eq!(ra.words, 2 * 9000);
        // One batch per submit, built on one host thread: the same batches in the same
        // order, so the same bits.
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (c, rc) = one_thread.install(|| train_using(&corpus, &cfg, &gpu, kernel, 1));
        assert_eq!(a.data(), c.data(), "{kernel:?}, one batch per submit");
        assert_eq!(
            ra.epoch_loss, rc.epoch_loss,
            "{kernel:?}, one batch per submit"
        );
        runs.push((kernel, a));
    }
    let seed6 = Config {
        seed: 6,
        ..cfg.clone()
    };
    let (e, _) = train_using(&corpus, &seed6, &gpu, KERNELS[0], 32);
    assert_ne!(runs[0].1.data(), e.data());
    // The trainer's default: the kernel made for the adapter, the same bits.
    let (d, _) = recur::word2vec::train_gpu(&corpus, &cfg, &gpu).unwrap();
    let own = GradientKernel::for_adapter(&gpu);
    let run = runs.iter().find(|r| r.0 == own).unwrap();
    assert_eq!(run.1.data(), d.data(), "{own:?}");
}

#[test]
fn gpu_trainer_recovers_planted_neighbours_for_every_architecture_and_output_layer() {
    let Some(gpu) = common::gpu() else { return };
    let dir = std::env::temp_dir().join(format!("recur-w2v-gpu-planted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = common::planted::corpus(&dir);
    for arch in [Arch::SkipGram, Arch::Cbow] {
        for output in [Output::Negative(5), Output::Hierarchical, Output::Softmax] {
            let cfg = small_gpu_config(arch, output);
            let mut losses = Vec::new();
            for kernel in KERNELS {
                let what = format!("GPU {kernel:?} {arch:?} {output:?}");
                let (kv, report) = train_using(&corpus, &cfg, &gpu, kernel, 32);
                let first = report.epoch_loss[0];
                let last = *report.epoch_loss.last().unwrap();
                eprintln!("{what}: loss per epoch {:?}", report.epoch_loss);
                assert!(last < first, "{what}: loss {first} -> {last}");
                common::planted::assert_recovered(&kv, &what);
                losses.push(report.epoch_loss);
            }
            // The two gradient kernels differ only in the order of their sums: over a whole
            // run their losses stay together.
            let e = rel_error(&losses[0], &losses[1]);
            assert!(
                e < 1e-4,
                "{arch:?} {output:?}: the kernels' losses differ by {e}"
            );
        }
    }
}

/// The cost model's plan of a run (its host side alone) has the trainer's batches and
/// submits: two dispatches a batch, as many submits (besides the loss readbacks).
#[test]
fn the_cost_plan_counts_the_trainers_dispatches_and_submits() {
    if common::gpu().is_none() {
        return;
    }
    // A device of its own: the counters of the shared one move with the other tests.
    let gpu = recur::Gpu::new().unwrap();
    let dir = std::env::temp_dir().join(format!("recur-w2v-gpu-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = common::planted::corpus(&dir);
    for (output, slots) in [(Output::Negative(3), 32), (Output::Softmax, 5)] {
        let cfg = Config {
            epochs: 2,
            gpu_batch: 100,
            ..small_gpu_config(Arch::SkipGram, output)
        };
        let vocab = recur::word2vec::Vocab::scan(&corpus, cfg.min_count, None).unwrap();
        let options = GpuTrainOptions {
            gradient_kernel: GradientKernel::Rows,
            batches_per_submit: slots,
        };
        let planned = recur::word2vec::plan_run(&corpus, &vocab, &cfg, &options).unwrap();
        let before = gpu.counters();
        let (_, report) =
            recur::word2vec::train_with_vocab_gpu_using(&corpus, &vocab, &cfg, &gpu, &options)
                .unwrap();
        let after = gpu.counters();
        assert_eq!(after.dispatches - before.dispatches, 2 * planned.batches);
        let submits = (after.submits - after.readbacks) - (before.submits - before.readbacks);
        assert_eq!(submits, planned.submits, "{output:?}");
        assert!(planned.submits < planned.batches, "{output:?}");
        assert_eq!(planned.effective_words, report.effective_words);
        assert_eq!(planned.kernels.map(|k| k.dispatches), [planned.batches; 2]);
        assert!(planned
            .kernels
            .iter()
            .all(|k| k.cost.flops > 0 && k.cost.bytes_read > 0));
    }
}

#[test]
fn gpu_trainer_trains_a_one_word_vocabulary() {
    let Some(gpu) = common::gpu() else { return };
    let dir = std::env::temp_dir().join(format!("recur-w2v-gpu-one-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let one = dir.join("one.txt");
    std::fs::write(&one, "a a a a\na a\n").unwrap();
    for kernel in KERNELS {
        for arch in [Arch::SkipGram, Arch::Cbow] {
            for output in [Output::Negative(2), Output::Hierarchical, Output::Softmax] {
                let what = format!("{kernel:?} {arch:?} {output:?}");
                let cfg = small_gpu_config(arch, output);
                let (kv, report) = train_using(&one, &cfg, &gpu, kernel, 32);
                assert_eq!(kv.len(), 1);
                assert!(kv.data().iter().all(|x| x.is_finite()), "{what}");
                assert!(report.epoch_loss.iter().all(|l| l.is_finite()), "{what}");
            }
        }
    }
}

#[test]
fn command_line_trains_on_the_gpu() {
    let Some(_gpu) = common::gpu() else { return };
    let dir = std::env::temp_dir().join(format!("recur-w2v-gpu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = common::planted::corpus(&dir);
    let out = dir.join("v.txt");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["word2vec", "--corpus", corpus.to_str().unwrap()])
        .args([
            "--out",
            out.to_str().unwrap(),
            "--backend",
            "gpu",
            "--skipgram",
        ])
        .args(["--hs", "--size", "16", "--window", "3", "--min-count", "1"])
        .args(["--sample", "0", "--gpu-batch", "128"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("running on GPU") && text.contains("words/s"),
        "{text}"
    );
    common::planted::assert_recovered(
        &recur::word2vec::load(&out).unwrap(),
        "recur word2vec --backend gpu",
    );
}

/// The cost model's time is its kernels' roofline times plus a launch per dispatch and the
/// submits' overhead, from the plan of the run (no GPU needed).
#[test]
fn the_cost_model_adds_launches_and_submits_to_the_roofline() {
    use recur::apps::bench::word2vec::{model_gpu, H100_SXM};
    let dir = std::env::temp_dir().join(format!("recur-w2v-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("zipf.txt");
    recur::apps::bench::word2vec::synthetic_corpus(&corpus, 30_000, 500, 3).unwrap();
    let cfg = Config {
        arch: Arch::SkipGram,
        min_count: 1,
        epochs: 1,
        ..Config::default()
    };
    let options = GpuTrainOptions {
        gradient_kernel: GradientKernel::Rows,
        batches_per_submit: 8,
    };
    let m = model_gpu(&corpus, &cfg, &options, "test".into(), 2, &H100_SXM).unwrap();
    let p = &m.planned;
    assert_eq!(p.words, 30_000);
    assert_eq!(p.submits, p.batches.div_ceil(8));
    assert_eq!(m.kernels.len(), 2);
    let launches = (2 * p.batches) as f64 * 5e-6;
    assert!((m.launch_sec - launches).abs() < 1e-12);
    assert!((m.submit_sec[1] - p.submits as f64 * 50e-6).abs() < 1e-12);
    let roofline: f64 = m
        .kernels
        .iter()
        .map(|k| {
            let bytes = (k.bytes_read + k.bytes_written) / 3.35e12;
            (k.flops / 67e12).max(bytes) * k.dispatches as f64
        })
        .sum();
    assert!((m.kernel_sec - roofline).abs() < 1e-9 * roofline.max(1.0));
    let slow = p.words as f64 / (roofline + launches + m.submit_sec[1]);
    assert!((m.words_per_sec[0] - slow).abs() < 1e-6 * slow);
    let table = m.table();
    assert!(table.contains("| sampled_gradients |") && table.contains("| apply_sparse |"));
}
