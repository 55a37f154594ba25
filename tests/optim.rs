//! Optimizers and gradient clipping: the CPU twins against the formulas written out by
//! hand, the GPU kernels against the CPU twins over several steps, and bad input.

mod common;

use common::{random_vec, rng, to_f64};
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::cpu;
use recur::gpu::{ClipPlan, OptimPlan, Recorder};
use recur::ops::Optimizer;
use recur::GpuTensor;

fn f(x: f32) -> f64 {
    x as f64
}

#[test]
fn cpu_adam_two_steps_match_the_formula() {
    let (lr, b1, b2, eps) = (0.01f32, 0.9f32, 0.999f32, 1e-8f32);
    let opt = Optimizer::Adam {
        lr,
        beta1: b1,
        beta2: b2,
        eps,
        weight_decay: 0.0,
        decoupled: false,
    };
    let p0 = [0.5f64, -1.25, 2.0];
    let g1 = [0.3f64, -0.02, 4.0];
    let g2 = [-0.1f64, 0.5, 3.0];
    let mut p = p0.to_vec();
    let mut state = vec![0.0f64; 6];
    cpu::optim::step(&opt, 1, &mut p, &g1, &mut state, 1.0).unwrap();
    // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps).
    for i in 0..3 {
        let want = p0[i] - f(lr) * g1[i] / (g1[i].abs() + f(eps));
        assert!(
            (p[i] - want).abs() < 1e-15,
            "step 1, element {i}: {} vs {want}",
            p[i]
        );
    }
    let p1 = p.clone();
    cpu::optim::step(&opt, 2, &mut p, &g2, &mut state, 1.0).unwrap();
    for i in 0..3 {
        let m = f(b1) * (1.0 - f(b1)) * g1[i] + (1.0 - f(b1)) * g2[i];
        let v = f(b2) * (1.0 - f(b2)) * g1[i] * g1[i] + (1.0 - f(b2)) * g2[i] * g2[i];
        let m_hat = m / (1.0 - f(b1) * f(b1));
        let v_hat = v / (1.0 - f(b2) * f(b2));
        let want = p1[i] - f(lr) * m_hat / (v_hat.sqrt() + f(eps));
        assert!(
            (p[i] - want).abs() < 1e-14,
            "step 2, element {i}: {} vs {want}",
            p[i]
        );
        assert!((state[i] - m).abs() < 1e-15 && (state[3 + i] - v).abs() < 1e-15);
    }
}

#[test]
fn cpu_adamw_decays_the_parameter_not_the_gradient() {
    let opt = Optimizer::adamw(0.1);
    let Optimizer::Adam {
        weight_decay, eps, ..
    } = opt
    else {
        unreachable!()
    };
    let (p0, g) = (2.0f64, -0.5f64);
    let mut p = [p0];
    let mut state = [0.0f64; 2];
    cpu::optim::step(&opt, 1, &mut p, &[g], &mut state, 1.0).unwrap();
    let want =
        p0 * (1.0 - 0.1f32 as f64 * f(weight_decay)) - 0.1f32 as f64 * g / (g.abs() + f(eps));
    assert!((p[0] - want).abs() < 1e-15, "{} vs {want}", p[0]);

    // Coupled Adam puts the decay into the gradient instead: with g = -wd * p the
    // effective gradient is zero and nothing moves.
    let opt = Optimizer::Adam {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.5,
        decoupled: false,
    };
    let mut p = [2.0f64];
    let mut state = [0.0f64; 2];
    cpu::optim::step(&opt, 1, &mut p, &[-1.0], &mut state, 1.0).unwrap();
    assert_eq!(p[0], 2.0);
}

#[test]
fn cpu_sgd_momentum_dampening_and_nesterov_match_the_formula() {
    let (lr, mu, wd) = (0.1f32, 0.9f32, 0.01f32);
    let p0 = [1.0f64, -2.0];
    let g1 = [0.5f64, 0.25];
    let g2 = [-1.0f64, 0.75];

    // Nesterov (dampening must be 0).
    let opt = Optimizer::Sgd {
        lr,
        momentum: mu,
        dampening: 0.0,
        weight_decay: wd,
        nesterov: true,
    };
    let mut p = p0.to_vec();
    let mut b = vec![0.0f64; 2];
    cpu::optim::step(&opt, 1, &mut p, &g1, &mut b, 1.0).unwrap();
    cpu::optim::step(&opt, 2, &mut p, &g2, &mut b, 1.0).unwrap();
    for i in 0..2 {
        let d1 = g1[i] + f(wd) * p0[i];
        let p1 = p0[i] - f(lr) * (1.0 + f(mu)) * d1;
        let d2 = g2[i] + f(wd) * p1;
        let b2 = f(mu) * d1 + d2;
        let p2 = p1 - f(lr) * (d2 + f(mu) * b2);
        assert!((p[i] - p2).abs() < 1e-15, "nesterov {i}: {} vs {p2}", p[i]);
        assert!((b[i] - b2).abs() < 1e-15);
    }

    // Heavy ball with dampening: the first step takes the plain gradient.
    let opt = Optimizer::Sgd {
        lr,
        momentum: mu,
        dampening: 0.3,
        weight_decay: 0.0,
        nesterov: false,
    };
    let mut p = p0.to_vec();
    let mut b = vec![0.0f64; 2];
    cpu::optim::step(&opt, 1, &mut p, &g1, &mut b, 1.0).unwrap();
    cpu::optim::step(&opt, 2, &mut p, &g2, &mut b, 1.0).unwrap();
    for i in 0..2 {
        let b2 = f(mu) * g1[i] + (1.0 - f(0.3)) * g2[i];
        let p2 = p0[i] - f(lr) * g1[i] - f(lr) * b2;
        assert!((p[i] - p2).abs() < 1e-15, "dampening {i}: {} vs {p2}", p[i]);
    }

    // Plain SGD keeps no state and scales the gradient by the clip factor.
    let mut p = p0.to_vec();
    cpu::optim::step(&Optimizer::sgd(lr), 1, &mut p, &g1, &mut [], 0.5).unwrap();
    for i in 0..2 {
        assert!((p[i] - (p0[i] - f(lr) * 0.5 * g1[i])).abs() < 1e-15);
    }
}

#[test]
fn cpu_rmsprop_centered_with_momentum_matches_the_formula() {
    let (lr, a, eps, mu) = (0.01f32, 0.9f32, 1e-8f32, 0.5f32);
    let opt = Optimizer::RmsProp {
        lr,
        alpha: a,
        eps,
        weight_decay: 0.0,
        momentum: mu,
        centered: true,
    };
    let p0 = [0.3f64, -0.7];
    let g1 = [2.0f64, -0.5];
    let g2 = [1.0f64, 0.25];
    let mut p = p0.to_vec();
    let mut s = vec![0.0f64; 6];
    cpu::optim::step(&opt, 1, &mut p, &g1, &mut s, 1.0).unwrap();
    cpu::optim::step(&opt, 2, &mut p, &g2, &mut s, 1.0).unwrap();
    let a = f(a);
    for i in 0..2 {
        let v1 = (1.0 - a) * g1[i] * g1[i];
        let m1 = (1.0 - a) * g1[i];
        let b1 = g1[i] / ((v1 - m1 * m1).sqrt() + f(eps));
        let v2 = a * v1 + (1.0 - a) * g2[i] * g2[i];
        let m2 = a * m1 + (1.0 - a) * g2[i];
        let b2 = f(mu) * b1 + g2[i] / ((v2 - m2 * m2).sqrt() + f(eps));
        let want = p0[i] - f(lr) * b1 - f(lr) * b2;
        assert!((p[i] - want).abs() < 1e-14, "{i}: {} vs {want}", p[i]);
        // Planes: square_avg, momentum_buffer, grad_avg.
        assert!((s[i] - v2).abs() < 1e-15);
        assert!((s[2 + i] - b2).abs() < 1e-12);
        assert!((s[4 + i] - m2).abs() < 1e-15);
    }

    // Plain RMSprop, one step: p -= lr * g / (sqrt((1 - alpha) g^2) + eps).
    let opt = Optimizer::rmsprop(0.01);
    let mut p = [1.0f64];
    let mut s = [0.0f64];
    cpu::optim::step(&opt, 1, &mut p, &[3.0], &mut s, 1.0).unwrap();
    let want = 1.0 - f(0.01) * 3.0 / ((1.0 - f(0.99)).sqrt() * 3.0 + f(1e-8));
    assert!((p[0] - want).abs() < 1e-14, "{} vs {want}", p[0]);
}

#[test]
fn cpu_clip_matches_the_norm_by_hand() {
    let a = [3.0f64, 4.0];
    let b = [12.0f64];
    let (norm, scale) = cpu::optim::clip(&[&a, &b], 6.5).unwrap();
    assert_eq!(norm, 13.0);
    assert!((scale - 6.5 / (13.0 + 1e-6f32 as f64)).abs() < 1e-15);
    let (_, scale) = cpu::optim::clip(&[&a, &b], 100.0).unwrap();
    assert_eq!(scale, 1.0);
    let (norm, _) = cpu::optim::clip(&[&[3.0f32, 4.0][..]], 1.0).unwrap();
    assert_eq!(norm, 5.0);
}

/// A random optimizer of every kind and flag combination, with learning rates large enough
/// that the parameter change stands well above f32 rounding of the parameters.
fn random_optimizer(rng: &mut StdRng) -> Optimizer {
    let lr = rng.random_range(0.05f32..0.3);
    let wd = if rng.random_bool(0.5) {
        rng.random_range(0.0f32..0.1)
    } else {
        0.0
    };
    match rng.random_range(0..4) {
        0 => {
            let nesterov = rng.random_bool(0.3);
            let momentum = if nesterov || rng.random_bool(0.7) {
                rng.random_range(0.1f32..0.95)
            } else {
                0.0
            };
            Optimizer::Sgd {
                lr,
                momentum,
                dampening: if nesterov {
                    0.0
                } else {
                    rng.random_range(0.0f32..0.5)
                },
                weight_decay: wd,
                nesterov,
            }
        }
        1 => Optimizer::RmsProp {
            lr: lr * 0.1,
            alpha: rng.random_range(0.5f32..0.99),
            eps: 1e-8,
            weight_decay: wd,
            momentum: if rng.random_bool(0.5) {
                rng.random_range(0.1f32..0.9)
            } else {
                0.0
            },
            centered: rng.random_bool(0.5),
        },
        k => Optimizer::Adam {
            lr,
            beta1: rng.random_range(0.5f32..0.95),
            beta2: rng.random_range(0.9f32..0.9999),
            eps: 1e-8,
            weight_decay: wd,
            decoupled: k == 3,
        },
    }
}

/// Two parameter buffers with one optimizer each, optionally clipped together, stepped
/// `steps` times on the GPU and on the CPU (f64); parameters, their change and the state
/// are compared after every step. Adam and RMSprop run with eps at least 1e-4
/// ([`common::comparable`]): with weight decay a gradient component can cancel
/// (g + wd * p near 0), and at eps 1e-8 the first step divides its f32 rounding by its
/// own size (seed 205273151417985: RMSprop's parameter change 1.3e-5 apart).
fn gpu_matches_cpu(rng: &mut StdRng, opt: Optimizer, lens: [usize; 2], clip: bool, steps: u64) {
    let Some(gpu) = common::gpu() else { return };
    let opt = common::comparable(opt);
    let slots = opt.slots();
    let p0: Vec<Vec<f32>> = lens.iter().map(|&n| random_vec(rng, n)).collect();
    let gp: Vec<GpuTensor> = p0
        .iter()
        .map(|p| GpuTensor::from_slice(&gpu, &[p.len()], p).unwrap())
        .collect();
    let gg: Vec<GpuTensor> = lens
        .iter()
        .map(|&n| GpuTensor::filled(&gpu, &[n], f32::NAN).unwrap())
        .collect();
    let gs: Vec<GpuTensor> = lens
        .iter()
        .map(|&n| GpuTensor::zeros(&gpu, &[slots * n]).unwrap())
        .collect();
    // A threshold that clips by a factor between about 0.3 and 1.
    let expected_norm = ((lens[0] + lens[1]) as f64 / 3.0).sqrt() as f32;
    let max_norm = expected_norm * rng.random_range(0.3f32..1.5);
    let clip_plan = clip.then(|| ClipPlan::new(&gpu, &[&gg[0], &gg[1]], max_norm).unwrap());
    let mut plans: Vec<OptimPlan> = (0..2)
        .map(|i| {
            OptimPlan::new(
                &gpu,
                &opt,
                &gp[i],
                &gg[i],
                (slots > 0).then_some(&gs[i]),
                clip_plan.as_ref(),
            )
            .unwrap()
        })
        .collect();

    let mut cp: Vec<Vec<f64>> = p0.iter().map(|p| to_f64(p)).collect();
    let mut cs: Vec<Vec<f64>> = lens.iter().map(|&n| vec![0.0; slots * n]).collect();
    for t in 1..=steps {
        let grads: Vec<Vec<f32>> = lens.iter().map(|&n| random_vec(rng, n)).collect();
        for i in 0..2 {
            gg[i].write(&grads[i]).unwrap();
        }
        let mut rec = Recorder::new(&gpu);
        if let Some(c) = &clip_plan {
            c.record(&mut rec);
        }
        for plan in plans.iter_mut() {
            plan.record(&mut rec).unwrap();
        }
        rec.submit().unwrap();

        let g64: Vec<Vec<f64>> = grads.iter().map(|g| to_f64(g)).collect();
        let scale = if clip {
            let (norm, scale) = cpu::optim::clip(&[&g64[0], &g64[1]], max_norm).unwrap();
            let got = clip_plan.as_ref().unwrap().norm().unwrap();
            let e = ((got as f64 - norm) / norm).abs();
            assert!(e < 1e-5, "step {t}: GPU norm {got} vs CPU {norm}");
            scale
        } else {
            1.0
        };
        for i in 0..2 {
            cpu::optim::step(&opt, t, &mut cp[i], &g64[i], &mut cs[i], scale).unwrap();
            let got = gp[i].to_vec().unwrap();
            let e = rel_error(&got, &cp[i]);
            assert!(
                e < 1e-5,
                "{opt:?} step {t} buffer {i}: parameters rel error {e}"
            );
            let moved_gpu: Vec<f64> = got.iter().zip(&p0[i]).map(|(&a, &b)| f(a) - f(b)).collect();
            let moved_cpu: Vec<f64> = cp[i].iter().zip(&p0[i]).map(|(&a, &b)| a - f(b)).collect();
            let e = rel_error(&moved_gpu, &moved_cpu);
            assert!(
                e < 1e-5,
                "{opt:?} step {t} buffer {i}: parameter change rel error {e}"
            );
            if slots > 0 {
                let e = rel_error(&gs[i].to_vec().unwrap(), &cs[i]);
                assert!(e < 1e-5, "{opt:?} step {t} buffer {i}: state rel error {e}");
            }
        }
    }
}

#[test]
fn gpu_optimizers_match_cpu_over_several_steps() {
    let mut rng = rng("gpu_optimizers_match_cpu_over_several_steps");
    for case in 0..12 {
        let opt = random_optimizer(&mut rng);
        let lens = [rng.random_range(1..3000), rng.random_range(1..700)];
        gpu_matches_cpu(&mut rng, opt, lens, case % 2 == 1, 4);
    }
}

#[test]
fn gpu_every_optimizer_kind_matches_cpu_with_clipping() {
    let mut rng = rng("gpu_every_optimizer_kind_matches_cpu_with_clipping");
    let kinds = [
        Optimizer::Sgd {
            lr: 0.2,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.01,
            nesterov: true,
        },
        Optimizer::RmsProp {
            lr: 0.01,
            alpha: 0.9,
            eps: 1e-8,
            weight_decay: 0.01,
            momentum: 0.5,
            centered: true,
        },
        Optimizer::adam(0.1),
        Optimizer::adamw(0.1),
    ];
    for opt in kinds {
        // More than one clip_partial workgroup (4096 elements each) in the first buffer.
        let lens = [rng.random_range(4097..9000), rng.random_range(1..300)];
        gpu_matches_cpu(&mut rng, opt, lens, true, 3);
    }
    // Stateless SGD without clipping: two absent buffers in one bind group.
    gpu_matches_cpu(&mut rng, Optimizer::sgd(0.2), [300, 5], false, 2);
}

#[test]
fn gpu_clip_of_a_single_buffer_matches_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_clip_of_a_single_buffer_matches_cpu");
    for _ in 0..5 {
        let n = rng.random_range(1..20000);
        let g: Vec<f32> = random_vec(&mut rng, n).iter().map(|x| x * 3.0).collect();
        let gt = GpuTensor::from_slice(&gpu, &[n], &g).unwrap();
        let mut plan = ClipPlan::new(&gpu, &[&gt], 1.0).unwrap();
        let max_norm = rng.random_range(0.1f32..200.0);
        plan.set_max_norm(max_norm).unwrap();
        let mut rec = Recorder::new(&gpu);
        plan.record(&mut rec);
        rec.submit().unwrap();
        let got = plan.result().to_vec().unwrap();
        let (norm, scale) = cpu::optim::clip(&[&to_f64(&g)], max_norm).unwrap();
        assert!(
            rel_error(&got, &[norm, scale]) < 1e-5,
            "{got:?} vs {norm} {scale}"
        );
    }
}

#[test]
fn gpu_training_steps_submit_once_and_never_read_back() {
    if common::gpu().is_none() {
        return;
    }
    // A device of its own: the work counters are per device.
    let gpu = recur::Gpu::new().unwrap();
    let n = 1000;
    let p = GpuTensor::zeros(&gpu, &[n]).unwrap();
    let g = GpuTensor::filled(&gpu, &[n], 1.0f32).unwrap();
    let s = GpuTensor::zeros(&gpu, &[2 * n]).unwrap();
    let clip = ClipPlan::new(&gpu, &[&g], 1.0).unwrap();
    let mut plan =
        OptimPlan::new(&gpu, &Optimizer::adam(0.01), &p, &g, Some(&s), Some(&clip)).unwrap();
    let before = gpu.counters();
    for _ in 0..3 {
        let mut rec = Recorder::new(&gpu);
        clip.record(&mut rec);
        plan.record(&mut rec).unwrap();
        rec.submit().unwrap();
    }
    let after = gpu.counters();
    assert_eq!(after.submits - before.submits, 3);
    // Per step: one partial sum per gradient, the total, the update.
    assert_eq!(after.dispatches - before.dispatches, 9);
    assert_eq!(after.readbacks, before.readbacks);
    assert_eq!(plan.steps(), 3);
    // Recording a second step before submitting the first is refused.
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec).unwrap();
    let err = plan.record(&mut rec).unwrap_err().to_string();
    assert!(err.contains("recorded twice"), "{err}");
    rec.submit().unwrap();
    // Adam moves every parameter by about lr per step against a constant gradient.
    let got = p.to_vec().unwrap();
    assert!(
        got.iter().all(|&x| (x + 0.04).abs() < 1e-4),
        "{:?}",
        &got[..4]
    );
}

#[test]
fn bad_optimizer_input_is_an_error_naming_the_value() {
    let mut p = vec![0.0f32; 4];
    let g = vec![0.0f32; 4];
    let bad = |opt: Optimizer, state: usize, want: &str| {
        let mut p = vec![0.0f32; 4];
        let err = cpu::optim::step(&opt, 1, &mut p, &[0.0; 4], &mut vec![0.0; state], 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    };
    bad(Optimizer::sgd(-1.0), 0, "lr = -1");
    bad(Optimizer::adam(f32::NAN), 8, "lr = NaN");
    bad(
        Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.1,
            weight_decay: 0.0,
            nesterov: true,
        },
        4,
        "dampening = 0.1",
    );
    bad(
        Optimizer::Adam {
            lr: 0.1,
            beta1: 1.0,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        },
        8,
        "beta1 = 1",
    );
    bad(Optimizer::adam(0.1), 4, "needs 8 elements, it has 4");
    let err = cpu::optim::step(&Optimizer::sgd(0.1), 1, &mut p, &g[..3], &mut [], 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 elements"), "{err}");
    let err = cpu::optim::step(&Optimizer::sgd(0.1), 0, &mut p, &g, &mut [], 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("count from 1"), "{err}");
    let err = cpu::optim::clip(&[&g[..]], 0.0).unwrap_err().to_string();
    assert!(err.contains("max_norm = 0"), "{err}");

    let Some(gpu) = common::gpu() else { return };
    let gp = GpuTensor::zeros(&gpu, &[4]).unwrap();
    let gg = GpuTensor::zeros(&gpu, &[4]).unwrap();
    let g3 = GpuTensor::zeros(&gpu, &[3]).unwrap();
    let err = OptimPlan::new(&gpu, &Optimizer::adam(0.1), &gp, &gg, None, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("needs 8 elements, it has 0"), "{err}");
    let err = OptimPlan::new(&gpu, &Optimizer::sgd(0.1), &gp, &g3, None, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("3 elements"), "{err}");
    let err = OptimPlan::new(&gpu, &Optimizer::sgd(0.1), &gp, &gp, None, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("different tensors"), "{err}");
    let err = ClipPlan::new(&gpu, &[&gg], f32::INFINITY)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("max_norm = inf"), "{err}");
    let mut plan = OptimPlan::new(&gpu, &Optimizer::sgd(0.1), &gp, &gg, None, None).unwrap();
    let err = plan.set_lr(-0.5).unwrap_err().to_string();
    assert!(err.contains("lr = -0.5"), "{err}");
}

#[test]
fn gpu_clip_and_update_are_bit_reproducible() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_clip_and_update_are_bit_reproducible");
    let lens = [rng.random_range(5000..15000), rng.random_range(1..100)];
    let grads: Vec<Vec<f32>> = lens.iter().map(|&n| random_vec(&mut rng, n)).collect();
    let p0 = random_vec(&mut rng, lens[0]);
    let run = || {
        let gg: Vec<GpuTensor> = grads
            .iter()
            .map(|g| GpuTensor::from_slice(&gpu, &[g.len()], g).unwrap())
            .collect();
        let p = GpuTensor::from_slice(&gpu, &[lens[0]], &p0).unwrap();
        let s = GpuTensor::zeros(&gpu, &[2 * lens[0]]).unwrap();
        let clip = ClipPlan::new(&gpu, &[&gg[0], &gg[1]], 1.0).unwrap();
        let mut plan = OptimPlan::new(
            &gpu,
            &Optimizer::adam(0.1),
            &p,
            &gg[0],
            Some(&s),
            Some(&clip),
        )
        .unwrap();
        let mut rec = Recorder::new(&gpu);
        clip.record(&mut rec);
        plan.record(&mut rec).unwrap();
        rec.submit().unwrap();
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        (
            bits(clip.result().to_vec().unwrap()),
            bits(p.to_vec().unwrap()),
        )
    };
    assert_eq!(run(), run(), "same input, same adapter: the same bits");
}
