// Replays recur's traced selftest cases (cases.json, written by tests/browser.rs) through
// this browser's WebGPU and compares each declared readback span with the CPU twin's values.
//
// Per case: every kernel is built from the WGSL as recur's registry assembles it, with its
// override values and (where the host shares one) its explicit bind group layout; every
// buffer is created filled with NaN, so a byte neither the host nor a kernel writes fails
// the comparison; then the host writes, submits (dispatches, copies, clears) and readbacks
// run in the traced order. The device has WebGPU's default limits.
//
// The verdict (<pre id="verdict">): "done", then one line per check ("ok NAME: REL" or
// "FAIL NAME: REL"), then "PASS N checks" or "FAIL ...".

const verdict = document.getElementById("verdict");
const lines = [];

// Chromium's virtual time stands still while a request is pending: the server answers
// /hold only once /done is asked for, so the DOM is not dumped before the verdict is in.
const hold = fetch("/hold").catch(() => {});

function finish(last) {
  verdict.textContent = ["done", ...lines, last].join("\n");
  fetch("/done").catch(() => {});
  return hold;
}

function bytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const NAN_BITS = 0x7fc00000;

async function replay(device, c, tolerance) {
  device.pushErrorScope("validation");
  device.pushErrorScope("internal");
  device.pushErrorScope("out-of-memory");
  const modules = {};
  for (const [family, code] of Object.entries(c.sources)) {
    modules[family] = device.createShaderModule({ code, label: family });
    const info = await modules[family].getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === "error");
    if (errors.length) {
      throw new Error(`compiling ${family}: ${errors.map((m) => `${m.lineNum}: ${m.message}`).join("; ")}`);
    }
  }
  const kernels = c.kernels.map((k) => {
    let layout = "auto";
    let bindGroupLayout = null;
    if (k.layout) {
      bindGroupLayout = device.createBindGroupLayout({
        entries: k.layout.map(([binding, type]) => ({
          binding,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type },
        })),
      });
      layout = device.createPipelineLayout({ bindGroupLayouts: [bindGroupLayout] });
    }
    const pipeline = device.createComputePipeline({
      label: `${k.family}::${k.entry}`,
      layout,
      compute: { module: modules[k.family], entryPoint: k.entry, constants: k.constants },
    });
    return { pipeline, layout: bindGroupLayout ?? pipeline.getBindGroupLayout(0) };
  });
  const buffers = c.buffers.map((b) => {
    let usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    if (b.uniform) usage |= GPUBufferUsage.UNIFORM;
    if (b.storage) usage |= GPUBufferUsage.STORAGE;
    const size = Math.max(4, Math.ceil(b.size / 4) * 4);
    const buffer = device.createBuffer({ size, usage, mappedAtCreation: true });
    new Uint32Array(buffer.getMappedRange()).fill(NAN_BITS);
    buffer.unmap();
    return buffer;
  });
  const reads = [];
  for (const e of c.events) {
    if (e.write) {
      const data = bytes(e.write.data);
      const padded = new Uint8Array(Math.ceil(data.length / 4) * 4);
      padded.set(data);
      device.queue.writeBuffer(buffers[e.write.buffer], e.write.offset, padded);
    } else if (e.submit) {
      const encoder = device.createCommandEncoder();
      let pass = null;
      for (const cmd of e.submit) {
        if (cmd.dispatch) {
          const d = cmd.dispatch;
          const k = kernels[d.kernel];
          pass ??= encoder.beginComputePass();
          pass.setPipeline(k.pipeline);
          pass.setBindGroup(0, device.createBindGroup({
            layout: k.layout,
            entries: d.bindings.map(([binding, buffer, offset, size]) => ({
              binding,
              resource: { buffer: buffers[buffer], offset, size: size ?? undefined },
            })),
          }));
          pass.dispatchWorkgroups(...d.groups);
          continue;
        }
        pass?.end();
        pass = null;
        if (cmd.copy) {
          const [src, srcOffset, dst, dstOffset, n] = cmd.copy;
          encoder.copyBufferToBuffer(buffers[src], srcOffset, buffers[dst], dstOffset, n);
        } else if ("clear" in cmd) {
          encoder.clearBuffer(buffers[cmd.clear]);
        }
      }
      pass?.end();
      device.queue.submit([encoder.finish()]);
    } else if (e.readback) {
      const { buffer, offset, bytes: n } = e.readback;
      const staging = device.createBuffer({
        size: Math.max(4, n),
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(buffers[buffer], offset, staging, 0, n);
      device.queue.submit([encoder.finish()]);
      reads.push(staging.mapAsync(GPUMapMode.READ).then(() => {
        const data = new Uint8Array(staging.getMappedRange().slice(0));
        staging.destroy();
        return data;
      }));
    }
  }
  const data = await Promise.all(reads);
  const errors = [];
  for (let i = 0; i < 3; i++) {
    const e = await device.popErrorScope();
    if (e) errors.push(e.message);
  }
  buffers.forEach((b) => b.destroy());
  if (errors.length) throw new Error(`WebGPU errors: ${errors.join("; ")}`);
  return c.checks.map((check) => {
    let diff = 0;
    let norm = 0;
    for (const p of check.parts) {
      const want = new Float64Array(bytes(p.want).buffer);
      const got = new Float32Array(data[p.readback].buffer, p.offset, want.length);
      for (let i = 0; i < want.length; i++) {
        diff += (got[i] - want[i]) ** 2;
        norm += want[i] ** 2;
      }
    }
    // As recur::check::rel_error: NaN anywhere gives NaN, which fails.
    const rel = norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
    // A check may carry its own tolerance (f16 storage's gradients); else the run's.
    return { name: check.name, rel, ok: rel < (check.tolerance ?? tolerance) };
  });
}

async function main() {
  if (!navigator.gpu) return finish("FAIL navigator.gpu is missing: WebGPU is off in this browser");
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return finish("FAIL no WebGPU adapter");
  const info = adapter.info ?? {};
  lines.push(`adapter: ${info.vendor} ${info.architecture} ${info.device} ${info.description}`.trim());
  lines.push(`browser: ${navigator.userAgent}`);
  const device = await adapter.requestDevice();
  let lost = null;
  device.lost.then((l) => { lost = l.message; });
  const spec = await (await fetch("/cases.json")).json();
  let passed = 0;
  let failed = 0;
  for (const c of spec.cases) {
    try {
      for (const r of await replay(device, c, spec.tolerance)) {
        lines.push(`${r.ok ? "ok" : "FAIL"} ${r.name}: ${r.rel.toExponential(2)}`);
        r.ok ? passed++ : failed++;
      }
    } catch (e) {
      lines.push(`FAIL ${c.label}: ${e.message ?? e}`);
      failed += Math.max(1, c.checks.length);
    }
    if (lost !== null) {
      lines.push(`FAIL the device was lost: ${lost}`);
      failed++;
      break;
    }
  }
  finish(failed ? `FAIL ${failed} of ${passed + failed} checks` : `PASS ${passed} checks`);
}

main().catch((e) => finish(`FAIL ${e.message ?? e}`));
