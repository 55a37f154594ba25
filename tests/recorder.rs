//! The recorder: every compute pass of a timed recording is timed (no cap), and every
//! dispatch carries the cost its plan counted, which the cost table sums.

mod common;

use recur::apps::bench::plan::{plan_table, ScheduleRow};
use recur::apps::bench::recurrent::RecurrentCase;
use recur::apps::bench::roofline;
use recur::exec::{Executor, GpuExecutor};
use recur::gpu::recurrent::{RecurrentKernels, RecurrentPath, StackSchedule, StepKernel};
use recur::gpu::{GemmPlan, Recorder};
use recur::ops::program::ProgramBuilder;
use recur::ops::recurrent::CellKind;
use recur::{Gemm, GpuTensor};

#[test]
fn a_timed_recording_times_every_pass_past_64() {
    let Some(gpu) = common::gpu() else { return };
    if !gpu.capabilities().timestamp_query {
        eprintln!("skipping: the adapter has no timestamp queries");
        return;
    }
    let spec = Gemm::new(8, 8, 8);
    let a = GpuTensor::filled(&gpu, &[64], 1.0f32).unwrap();
    let b = GpuTensor::filled(&gpu, &[64], 1.0f32).unwrap();
    let c = GpuTensor::<f32>::zeros(&gpu, &[64]).unwrap();
    let scratch = GpuTensor::<f32>::zeros(&gpu, &[64]).unwrap();
    let plan = GemmPlan::new(&gpu, &spec, &a, &b, None, &c).unwrap();
    // A copy ends the compute pass, so each dispatch gets a pass of its own: 150 passes,
    // more than two query sets' worth.
    let passes = 150;
    let mut rec = Recorder::timed(&gpu);
    for _ in 0..passes {
        plan.record(&mut rec);
        rec.copy(c.buffer(), 0, scratch.buffer(), 0, 256);
    }
    let report = rec.submit().unwrap();
    assert_eq!(report.dispatches, passes);
    assert_eq!(report.timed_passes as u64, passes);
    let seconds = report.gpu_seconds.expect("timestamps were on");
    assert!(seconds > 0.0 && seconds.is_finite(), "{seconds}");
    assert_eq!(scratch.to_vec().unwrap(), vec![8.0f32; 64]);
}

#[test]
fn each_dispatch_carries_its_workgroups_invocations_and_cost() {
    let Some(gpu) = common::gpu() else { return };
    let (m, n, k) = (70, 33, 9);
    let spec = Gemm::new(m, n, k);
    let a = GpuTensor::zeros(&gpu, &[m * k]).unwrap();
    let b = GpuTensor::zeros(&gpu, &[k * n]).unwrap();
    let c = GpuTensor::zeros(&gpu, &[m * n]).unwrap();
    let plan = GemmPlan::new(&gpu, &spec, &a, &b, None, &c)
        .unwrap()
        .named("test");
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec);
    plan.record(&mut rec);
    let costs = rec.costs();
    assert_eq!(costs.len(), 2);
    let d = costs[0];
    assert_eq!(d.kernel.family, "gemm");
    assert_eq!(d.kernel.role, "test");
    assert!(d.workgroups >= 1);
    assert!(d.invocations.is_some_and(|i| (1..=256).contains(&i)));
    assert_eq!(d.cost.flops, spec.flops());
    // Every element of A, B and C is touched at least once.
    let least = 4.0 * (m * k + k * n) as f64;
    assert!(d.cost.unique_read >= least && d.cost.bytes_read >= d.cost.unique_read);
    assert_eq!(d.cost.bytes_written, 4.0 * (m * n) as f64);
}

#[test]
fn the_cost_table_sums_what_the_plans_record() {
    let Some(gpu) = common::gpu_with(Some(RecurrentPath::Step), Some(StepKernel::Entry)) else {
        return;
    };
    let case = RecurrentCase::new(CellKind::Lstm, 20, 3, 5);
    let h100 = roofline::find("h100").unwrap();
    let table = plan_table(&gpu, &case, h100).unwrap();
    for phase in [&table.forward, &table.backward] {
        let dispatches: u64 = phase.rows.iter().map(|r| r.counts.dispatches).sum();
        assert_eq!(dispatches, phase.total.counts.dispatches);
        let flops: f64 = phase.rows.iter().map(|r| r.counts.cost.flops).sum();
        assert!((flops - phase.total.counts.cost.flops).abs() <= 1e-9 * flops);
        let seconds: f64 = phase.rows.iter().map(|r| r.seconds).sum();
        assert!((seconds - phase.total.seconds).abs() <= 1e-9 * seconds);
        // Every dispatch costs at least the launch.
        let launches = phase.total.counts.dispatches as f64 * roofline::LAUNCH_SECONDS;
        assert!(phase.total.seconds >= launches);
    }
    // The forward records one step kernel per step; the GEMMs do the products' work.
    let steps = table
        .forward
        .rows
        .iter()
        .find(|r| r.counts.kernel == "recurrent::forward_step")
        .expect("a forward step row");
    assert_eq!(steps.counts.dispatches, 5);
    assert_eq!(steps.counts.invocations, Some(64));
    let (i, h, rows) = (20.0, 20.0, 15.0);
    let projection = 2.0 * rows * 4.0 * h * i;
    let gemm_flops: f64 = table
        .forward
        .rows
        .iter()
        .filter(|r| r.counts.kernel.starts_with("gemm::"))
        .map(|r| r.counts.cost.flops)
        .sum();
    assert_eq!(gemm_flops, projection);
}

#[test]
fn the_sequence_kernel_is_one_dispatch_with_every_step_in_its_cost() {
    if common::gpu().is_none() {
        return;
    }
    let gpu = recur::Gpu::new().unwrap();
    gpu.set_recurrent_path(RecurrentPath::Sequence).unwrap();
    let (h, b, t) = (20usize, 3usize, 5usize);
    let case = RecurrentCase::new(CellKind::Lstm, h, b, t);
    let table = plan_table(&gpu, &case, roofline::find("h100").unwrap()).unwrap();
    // Transpose, projection, sequence kernel.
    assert_eq!(table.forward.total.counts.dispatches, 3);
    let seq = table
        .forward
        .rows
        .iter()
        .find(|r| r.counts.kernel == "recurrent::forward_sequence")
        .expect("a sequence row");
    assert_eq!(seq.counts.dispatches, 1);
    assert_eq!(seq.counts.invocations, Some(64));
    // One workgroup (a tile of 4 >= 3 entries) reads W_hh^T with its bias row once a step.
    assert_eq!(seq.counts.workgroups_max, 1);
    let w_bytes = 4.0 * ((h + 1) * 4 * h) as f64;
    assert!(seq.counts.cost.bytes_read >= t as f64 * w_bytes);
    assert!(seq.counts.cost.unique_read >= w_bytes);
    // The recurrent product of every step and entry: 2 G H H operations.
    assert!(seq.counts.cost.flops >= (2 * t * b * 4 * h * h) as f64);
}

#[test]
fn a_cost_model_device_plans_the_gpu_kernels_and_never_runs_them() {
    if common::gpu().is_none() {
        return;
    }
    let gpu = recur::Gpu::new_for_cost_model().unwrap();
    assert!(gpu.is_cost_model());
    let err = gpu
        .set_gemm_variant(recur::gpu::GemmVariant::CpuAdapter)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already Tiled"), "{err}");
    let err = gpu
        .set_step_kernel(StepKernel::Entry)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already Tiled"), "{err}");
    let spec = Gemm::new(5, 6, 7);
    let a = GpuTensor::<f32>::zeros(&gpu, &[35]).unwrap();
    let b = GpuTensor::<f32>::zeros(&gpu, &[42]).unwrap();
    let c = GpuTensor::<f32>::zeros(&gpu, &[30]).unwrap();
    let plan = GemmPlan::new(&gpu, &spec, &a, &b, None, &c).unwrap();
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec);
    assert_eq!(rec.costs()[0].kernel.entry, "main");
    let err = rec.submit().unwrap_err().to_string();
    assert!(err.contains("cost tables"), "{err}");
}

#[test]
fn the_tiled_step_kernels_load_each_weight_once_per_batch_tile() {
    let Some(gpu) = common::gpu_with(Some(RecurrentPath::Step), Some(StepKernel::Tiled)) else {
        return;
    };
    // 33 entries: three forward tiles of 16, five backward tiles of 8.
    let (h, b, t) = (20usize, 33usize, 5usize);
    let case = RecurrentCase::new(CellKind::Lstm, h, b, t);
    let table = plan_table(&gpu, &case, roofline::find("h100").unwrap()).unwrap();
    let row = |phase: &recur::apps::bench::plan::PhaseTable, name: &str| {
        phase
            .rows
            .iter()
            .find(|r| r.counts.kernel == name)
            .unwrap_or_else(|| panic!("no {name} row"))
            .counts
            .clone()
    };
    let hp = h.div_ceil(4) * 4;
    let forward = row(&table.forward, "recurrent::forward_step_tiled");
    assert_eq!(forward.dispatches, t as u64);
    assert_eq!(forward.invocations, Some(128));
    // ceil(H / 4) x ceil(B / 16) workgroups.
    assert_eq!(forward.workgroups_max, 5 * 3);
    // W_hh (padded rows) loaded three times a step, once distinct; the product over the
    // padded tile: 48 entries, K in one chunk of 64.
    let w = 4.0 * (4 * h * hp) as f64;
    let per_step = forward.cost.bytes_read / t as f64;
    assert!(per_step >= 3.0 * w && per_step < 3.0 * w + 5.0 * 33.0 * 4.0 * hp as f64 + 1e5);
    assert!(forward.cost.unique_read >= t as f64 * w);
    assert!(forward.cost.flops >= (t * 2 * 48 * 4 * h * 64) as f64);
    let backward = row(&table.backward, "recurrent::backward_step_tiled");
    assert_eq!(backward.dispatches, t as u64);
    assert_eq!(backward.workgroups_max, 3 * 5);
    // The last step has no product: the weights are loaded five times in each of the others.
    assert!(backward.cost.bytes_read >= (t - 1) as f64 * 5.0 * w);
    assert!(backward.cost.bytes_read < t as f64 * 5.0 * w + 1e6);
}

#[test]
fn the_schedules_regroup_the_recorded_dispatches_of_stacks() {
    let Some(gpu) = common::gpu_with(Some(RecurrentPath::Step), Some(StepKernel::Tiled)) else {
        return;
    };
    let h100 = roofline::find("h100").unwrap();
    let (h, b, t) = (20usize, 3usize, 5usize);
    let rows = |case: &RecurrentCase| {
        let table = plan_table(&gpu, case, h100).unwrap();
        let recorded = &table.schedules[0];
        assert_eq!(recorded.schedule, ScheduleRow::AS_RECORDED);
        assert_eq!(recorded.forward.0, table.forward.total.counts.dispatches);
        assert_eq!(recorded.backward.0, table.backward.total.counts.dispatches);
        let f = table.forward.total.seconds + table.backward.total.seconds;
        assert!((recorded.forward.1 + recorded.backward.1 - f).abs() <= 1e-12);
        table.schedules
    };
    let lstm = RecurrentCase::new(CellKind::Lstm, h, b, t);

    // One layer, one direction: nothing to regroup.
    assert_eq!(rows(&lstm).len(), 1);

    // Two layers. The tiled step kernels at this size record them as a wavefront
    // (gpu::recurrent::RecurrentStack): the schedules are that, the layers one after the
    // other, and the what-if wavefront. Layer by layer, the forward is per layer a
    // transpose, a projection and T steps; the what-if keeps layer 0's projection only and
    // runs T + 1 waves. Backward: per layer T steps, a finishing dispatch and its products;
    // the what-if runs T + 1 waves and one finishing dispatch, and drops the top layer's dx
    // product. The recorded wavefront is the what-if's forward plus the transpose of the top
    // layer's W_ih, and the what-if's backward.
    let s = rows(&lstm.with_layers(2, false));
    assert_eq!(s.len(), 3);
    let (built, recorded, wave) = (&s[0], &s[1], &s[2]);
    assert_eq!(recorded.schedule, ScheduleRow::LAYERS);
    assert_eq!(wave.schedule, ScheduleRow::WAVEFRONT);
    assert_eq!(built.forward.0, wave.forward.0 + 1);
    assert_eq!(built.backward.0, wave.backward.0);
    assert!(built.forward.1 < recorded.forward.1 && built.backward.1 < recorded.backward.1);
    assert_eq!(recorded.forward.0, 2 * (2 + t as u64));
    assert_eq!(wave.forward.0, 3 + (t as u64 + 1));
    assert_eq!(
        wave.backward.0,
        recorded.backward.0 - 2 * (t as u64 + 1) + (t as u64 + 1) + 1 - 1
    );
    // At this size every dispatch is launch-bound, so fewer dispatches take less time.
    assert!(wave.forward.1 < recorded.forward.1 && wave.backward.1 < recorded.backward.1);

    // One bidirectional layer: its directions already share each step's dispatch
    // (gpu::recurrent::RecurrentPair), so nothing is left to regroup, and there is no
    // wavefront. Forward: two transposes, two projections, T steps.
    let s = rows(&lstm.with_layers(1, true));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].forward.0, 4 + t as u64);
}

#[test]
fn each_ops_dispatches_are_the_phases_in_order() {
    let Some(gpu) = common::gpu_with(Some(RecurrentPath::Step), Some(StepKernel::Tiled)) else {
        return;
    };
    let case = RecurrentCase::new(CellKind::Gru, 12, 2, 3).with_layers(2, false);
    let layer = recur::nn::Recurrent::new(case.config(), 5).unwrap();
    let mut exec = GpuExecutor::new(&gpu);
    // Layer by layer, so each layer's ops carry what the what-if schedules need (a stack
    // lowered as a wavefront records at its top layer's op and has none).
    exec.set_recurrent_kernels(RecurrentKernels {
        stack: Some(StackSchedule::Layers),
        ..Default::default()
    });
    for (name, t) in layer.params() {
        exec.set_param(name, &t.shape, &t.data).unwrap();
    }
    let mut p = ProgramBuilder::new();
    let rows = case.batch * case.steps;
    let input = p.input("input", &[rows, case.input]);
    let rec = layer
        .record_forward(&mut p, "", input, case.batch, case.steps, None, None)
        .unwrap();
    p.next_phase();
    let d_out = p.input("output gradient", &[rows, case.hidden]);
    layer.record_backward(&mut p, &rec, Some(d_out)).unwrap();
    let program = exec.load(p.finish()).unwrap();
    for phase in [0, 1] {
        let flat = exec.phase_costs(program, phase).unwrap();
        let by_op = exec.phase_costs_by_op(program, phase).unwrap();
        let joined: Vec<_> = by_op.iter().flat_map(|o| o.dispatches.clone()).collect();
        assert_eq!(joined.len(), flat.len());
        for (a, b) in joined.iter().zip(&flat) {
            assert_eq!((a.kernel, a.workgroups), (b.kernel, b.workgroups));
            assert_eq!(a.cost.flops, b.cost.flops);
        }
        // Two recurrent ops (2 layers), each marked forward or backward.
        let recurrent: Vec<_> = by_op.iter().filter_map(|o| o.recurrent).collect();
        assert_eq!(recurrent.len(), 2);
        assert!(recurrent.iter().all(|r| r.backward == (phase == 1)));
        assert!(recurrent.iter().all(|r| r.in_step_input.flops > 0.0));
    }
}
