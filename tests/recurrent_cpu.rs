//! The CPU recurrent layer: backward against central finite differences in f64 for every
//! cell, both directions, variable lengths, both layouts; and the packed-sequence semantics.

mod common;

use common::rng;
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::cpu::recurrent::{backward, forward, Weights};
use recur::cpu::step_parts::unit_parts;
use recur::ops::recurrent::{CellKind, RecurrentShape};

fn randv(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Everything one forward needs, owned.
#[derive(Clone)]
struct Case {
    shape: RecurrentShape,
    lengths: Option<Vec<usize>>,
    x: Vec<f64>,
    h0: Vec<f64>,
    c0: Vec<f64>,
    w_ih: Vec<f64>,
    w_hh: Vec<f64>,
    b_ih: Vec<f64>,
    b_hh: Vec<f64>,
    /// Loss weights: L = sum(y * wy) + sum(h_n * wh) + sum(c_n * wc).
    wy: Vec<f64>,
    wh: Vec<f64>,
    wc: Vec<f64>,
    /// A recurrent dropout mask [B, H] (0 or 1/keep), or none.
    rmask: Option<Vec<f64>>,
}

fn random_case(rng: &mut StdRng, cell: CellKind) -> Case {
    let (i, h, b, t) = (
        rng.random_range(1..5),
        rng.random_range(1..5),
        rng.random_range(1..4),
        rng.random_range(1..6),
    );
    random_case_sized(rng, cell, i, h, b, t)
}

fn random_case_sized(
    rng: &mut StdRng,
    cell: CellKind,
    i: usize,
    h: usize,
    b: usize,
    t: usize,
) -> Case {
    let mut shape = RecurrentShape::new(cell, i, h, b, t)
        .reverse(rng.random_bool(0.5))
        .batch_first(rng.random_bool(0.5));
    if rng.random_bool(0.5) {
        // One half of a concatenated bidirectional output.
        shape = shape.output_columns(2 * h + 1, rng.random_range(0..=h + 1));
    }
    let lengths = rng
        .random_bool(0.6)
        .then(|| (0..b).map(|_| rng.random_range(1..=t)).collect());
    let gw = shape.gate_width();
    Case {
        shape,
        lengths,
        x: randv(rng, shape.rows() * i, 1.0),
        h0: randv(rng, b * h, 0.8),
        c0: randv(rng, b * h, 0.8),
        w_ih: randv(rng, gw * i, 0.7),
        w_hh: randv(rng, gw * h, 0.7),
        b_ih: randv(rng, gw, 0.5),
        b_hh: randv(rng, gw, 0.5),
        wy: randv(rng, shape.rows() * shape.out_stride, 1.0),
        wh: randv(rng, b * h, 1.0),
        wc: randv(rng, b * h, 1.0),
        rmask: rng.random_bool(0.4).then(|| {
            (0..b * h)
                .map(|_| if rng.random_bool(0.3) { 0.0 } else { 1.0 / 0.7 })
                .collect()
        }),
    }
}

fn weights(c: &Case) -> Weights<'_, f64> {
    Weights {
        w_ih: &c.w_ih,
        w_hh: &c.w_hh,
        b_ih: Some(&c.b_ih),
        b_hh: Some(&c.b_hh),
    }
}

fn loss(c: &Case) -> f64 {
    let mut y = vec![0.0; c.shape.rows() * c.shape.out_stride];
    let (fin, _) = forward(
        &c.shape,
        &c.x,
        c.lengths.as_deref(),
        Some(&c.h0),
        Some(&c.c0),
        &weights(c),
        c.rmask.as_deref(),
        &mut y,
    )
    .unwrap();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    // Only this direction's columns of y count (the rest of the buffer is not its output).
    let mut ly = 0.0;
    for row in 0..c.shape.rows() {
        for k in 0..c.shape.hidden {
            let at = row * c.shape.out_stride + c.shape.out_offset + k;
            ly += y[at] * c.wy[at];
        }
    }
    ly + dot(&fin.h_n, &c.wh) + dot(&fin.c_n, &c.wc)
}

/// Central differences of `loss` along a few random coordinates of one parameter, against
/// the analytic gradient there.
fn check_param(
    rng: &mut StdRng,
    case: &Case,
    name: &str,
    get: fn(&mut Case) -> &mut Vec<f64>,
    analytic: &[f64],
) {
    let mut c = case.clone();
    let n = get(&mut c).len();
    assert_eq!(n, analytic.len(), "{name}: gradient has the wrong size");
    let mut numeric = Vec::new();
    let mut exact = Vec::new();
    // Up to 12 coordinates where the loss is smooth across the stencil (a few tries more
    // for ReLU kinks).
    for _ in 0..n.min(12) * 3 {
        if numeric.len() == n.min(12) {
            break;
        }
        let j = rng.random_range(0..n);
        let orig = get(&mut c)[j];
        let d = common::derivative(
            |step| {
                get(&mut c)[j] = orig + step;
                loss(&c)
            },
            common::DERIVATIVE_STEP,
        );
        get(&mut c)[j] = orig;
        if let Some(d) = d {
            numeric.push(d);
            exact.push(analytic[j]);
        }
    }
    assert!(!numeric.is_empty(), "{name}: no smooth coordinate found");
    let norm: f64 = numeric.iter().map(|v| v * v).sum::<f64>().sqrt();
    let e = rel_error(&exact, &numeric);
    // A gradient that is exactly zero (e.g. no lengths reach these coordinates) is checked absolutely.
    let ok = if norm < 1e-9 {
        exact.iter().all(|v| v.abs() < 1e-8)
    } else {
        e < 1e-6
    };
    assert!(
        ok,
        "{name} of {:?} lengths {:?}: rel error {e}\nexact {exact:?}\nnumeric {numeric:?}",
        case.shape, case.lengths
    );
}

#[test]
fn cpu_backward_matches_finite_differences_for_every_cell() {
    let mut rng = rng("cpu_backward_matches_finite_differences_for_every_cell");
    for cell in CellKind::ALL {
        for _ in 0..6 {
            let case = random_case(&mut rng, cell);
            let mut y = vec![0.0; case.shape.rows() * case.shape.out_stride];
            let w = weights(&case);
            let (_, saved) = forward(
                &case.shape,
                &case.x,
                case.lengths.as_deref(),
                Some(&case.h0),
                Some(&case.c0),
                &w,
                case.rmask.as_deref(),
                &mut y,
            )
            .unwrap();
            let g = backward(
                &case.shape,
                &case.x,
                &w,
                &saved,
                Some(&case.wy),
                Some(&case.wh),
                Some(&case.wc),
            )
            .unwrap();
            check_param(&mut rng, &case, "x", |c| &mut c.x, &g.dx);
            check_param(&mut rng, &case, "h0", |c| &mut c.h0, &g.dh0);
            if cell.has_cell_state() {
                check_param(&mut rng, &case, "c0", |c| &mut c.c0, &g.dc0);
            }
            check_param(&mut rng, &case, "weight_ih", |c| &mut c.w_ih, &g.dw_ih);
            check_param(&mut rng, &case, "weight_hh", |c| &mut c.w_hh, &g.dw_hh);
            check_param(&mut rng, &case, "bias_ih", |c| &mut c.b_ih, &g.db_ih);
            check_param(&mut rng, &case, "bias_hh", |c| &mut c.b_hh, &g.db_hh);
        }
    }
}

/// One sequence alone, length T = its length, time-major, batch 1.
fn run_alone(case: &Case, b: usize, len: usize) -> (Vec<f64>, Vec<f64>) {
    let s = case.shape;
    let h = s.hidden;
    let shape = RecurrentShape::new(s.cell, s.input, h, 1, len).reverse(s.reverse);
    let mut x = Vec::new();
    for t in 0..len {
        x.extend_from_slice(&case.x[s.row(t, b) * s.input..][..s.input]);
    }
    let mut y = vec![0.0; len * h];
    let (fin, _) = forward(
        &shape,
        &x,
        None,
        Some(&case.h0[b * h..][..h]),
        Some(&case.c0[b * h..][..h]),
        &weights(case),
        case.rmask.as_ref().map(|m| &m[b * h..][..h]),
        &mut y,
    )
    .unwrap();
    (y, fin.h_n)
}

#[test]
fn padded_batches_follow_packed_sequence_semantics() {
    let mut rng = rng("padded_batches_follow_packed_sequence_semantics");
    for cell in CellKind::ALL {
        for _ in 0..4 {
            let mut case = random_case(&mut rng, cell);
            let b = case.shape.batch;
            case.lengths = Some(
                (0..b)
                    .map(|_| rng.random_range(1..=case.shape.steps))
                    .collect(),
            );
            let s = case.shape;
            let mut y = vec![f64::NAN; s.rows() * s.out_stride];
            let (fin, _) = forward(
                &s,
                &case.x,
                case.lengths.as_deref(),
                Some(&case.h0),
                Some(&case.c0),
                &weights(&case),
                case.rmask.as_deref(),
                &mut y,
            )
            .unwrap();
            for (bi, &len) in case.lengths.as_ref().unwrap().iter().enumerate() {
                // Each sequence gives what it gives alone: outputs, and the final state at its
                // last valid step (for the reverse direction, the state after time 0).
                let (alone_y, alone_h) = run_alone(&case, bi, len);
                for t in 0..s.steps {
                    let got = &y[s.row(t, bi) * s.out_stride + s.out_offset..][..s.hidden];
                    if t < len {
                        let e = rel_error(got, &alone_y[t * s.hidden..][..s.hidden]);
                        assert!(e < 1e-12, "{cell:?} b {bi} t {t}: {e}");
                    } else {
                        assert!(
                            got.iter().all(|&v| v == 0.0),
                            "{cell:?}: output past the length is {got:?}"
                        );
                    }
                }
                let e = rel_error(&fin.h_n[bi * s.hidden..][..s.hidden], &alone_h);
                assert!(e < 1e-12, "{cell:?} b {bi}: final state differs by {e}");
            }
        }
    }
}

#[test]
fn bad_recurrent_input_is_an_error() {
    let shape = RecurrentShape::new(CellKind::Lstm, 3, 2, 2, 4);
    let w_ih = vec![0.0f32; 8 * 3];
    let w_hh = vec![0.0f32; 8 * 2];
    let w = Weights {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: None,
        b_hh: None,
    };
    let x = vec![0.0f32; 4 * 2 * 3];
    let mut y = vec![0.0f32; 4 * 2 * 2];
    let err = forward(&shape, &x[1..], None, None, None, &w, None, &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("input has 23 elements, expected 24"), "{err}");
    let err = forward(&shape, &x, Some(&[4, 5]), None, None, &w, None, &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lengths[1] = 5"), "{err}");
    let err = forward(&shape, &x, Some(&[0, 1]), None, None, &w, None, &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lengths[0] = 0"), "{err}");
    let err = forward(&shape, &x, Some(&[1]), None, None, &w, None, &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("one per batch entry"), "{err}");
    let err = forward(&shape, &x, None, Some(&[0.0; 3]), None, &w, None, &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("h0 has 3 elements, expected 4"), "{err}");
    let bad = Weights { w_hh: &w_ih, ..w };
    let err = forward(&shape, &x, None, None, None, &bad, None, &mut y)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weight_hh has 24 elements, expected 16"),
        "{err}"
    );
}

/// Forward and backward of `case` on a thread pool of `threads` threads: y, h_n, c_n and
/// every gradient, one after another.
fn run_on_threads(case: &Case, threads: usize) -> Vec<Vec<f64>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let s = case.shape;
        let parts = unit_parts(s.batch, s.gate_width(), s.hidden).len();
        assert_eq!(
            parts, threads,
            "{s:?} on {threads} threads splits into {parts} parts"
        );
        let mut y = vec![0.0; s.rows() * s.out_stride];
        let w = weights(case);
        let (fin, saved) = forward(
            &s,
            &case.x,
            case.lengths.as_deref(),
            Some(&case.h0),
            Some(&case.c0),
            &w,
            case.rmask.as_deref(),
            &mut y,
        )
        .unwrap();
        let g = backward(
            &s,
            &case.x,
            &w,
            &saved,
            Some(&case.wy),
            Some(&case.wh),
            Some(&case.wc),
        )
        .unwrap();
        vec![
            y, fin.h_n, fin.c_n, g.dx, g.dh0, g.dc0, g.dw_ih, g.dw_hh, g.db_ih, g.db_hh,
        ]
    })
}

#[test]
fn steps_split_among_threads_match_one_thread() {
    // The finite-difference cases are too small to split; these are large enough for every
    // cell (batch * gates * hidden^2 above the threshold) and not multiples of the 16-unit
    // blocks the split uses.
    let mut rng = rng("steps_split_among_threads_match_one_thread");
    let names = [
        "y", "h_n", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh",
    ];
    for cell in CellKind::ALL {
        let (i, h, b, t) = (
            rng.random_range(1..40),
            rng.random_range(181..230),
            rng.random_range(28..40),
            rng.random_range(2..5),
        );
        let case = random_case_sized(&mut rng, cell, i, h, b, t);
        let one = run_on_threads(&case, 1);
        let three = run_on_threads(&case, 3);
        for ((a, b), name) in three.iter().zip(&one).zip(names) {
            let e = rel_error(a, b);
            assert!(
                e < 1e-12 || (a.is_empty() && b.is_empty()),
                "{cell:?} {name}: 3 threads against 1 differ by {e} ({:?})",
                case.shape
            );
        }
    }
}
