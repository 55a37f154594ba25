// Compiles one kernel family with Tint, Dawn's WGSL compiler, and builds every pipeline the
// host may build from it, on one Dawn backend. recur's own path (wgpu) compiles WGSL with
// naga; this check holds the kernels to what Chrome's and Dawn's WebGPU accept too.
//
//   node check.mjs MANIFEST.json null|opengl
//
// MANIFEST.json comes from `cargo test --test shaders tint_manifest` (tests/shaders.rs): the
// family's source exactly as the registry assembles it and every (entry point, override
// values, bind group layout) in the registry's table. The device has WebGPU's default limits
// only, so a kernel beyond them (storage buffers per stage, workgroup memory, invocations)
// fails here. `null` is Dawn's null backend (WGSL and pipeline validation against core
// WebGPU); `opengl` is Dawn's OpenGL backend in compatibility mode, which also translates
// the kernels to GLSL and has the driver (Mesa's llvmpipe here) compile them.
//
// Prints one line per pipeline; exits 1 if anything failed. Run one family per process:
// a crash inside Dawn then hides nothing else.

import { readFileSync } from 'node:fs';
import { create, globals } from 'webgpu';

const [manifestPath, backend] = process.argv.slice(2);
if (!manifestPath || !['null', 'opengl'].includes(backend)) {
  console.error('usage: node check.mjs MANIFEST.json null|opengl');
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
Object.assign(globalThis, globals);

// Dawn's instance must stay referenced for the life of the process, or it crashes.
const gpu = create([`backend=${backend}`]);
globalThis.recurDawnInstance = gpu;

const adapter = await gpu.requestAdapter(
  backend === 'opengl' ? { featureLevel: 'compatibility' } : {},
);
const where = `${manifest.family} on Dawn ${backend}`;
if (!adapter) {
  console.log(`FAIL ${where}: no adapter`);
  process.exit(1);
}

// `enable` directives name optional features; ask for each, and skip (saying so) on an
// adapter without it.
const FEATURE_OF_ENABLE = { f16: 'shader-f16', subgroups: 'subgroups' };
const enables = [...manifest.source.matchAll(/^\s*enable\s+([\w\s,]+);/gm)].flatMap((m) =>
  m[1].split(',').map((s) => s.trim()),
);
const requiredFeatures = enables.map((e) => FEATURE_OF_ENABLE[e] ?? e);
const missing = requiredFeatures.filter((f) => !adapter.features.has(f));
if (missing.length > 0) {
  console.log(`skipped ${where}: the adapter lacks ${missing.join(', ')}`);
  process.exit(0);
}
// On the null backend the device keeps WebGPU's default limits, which every kernel must fit
// (recur's RECUR_LIMITS=default). Compatibility mode's defaults are lower still (128
// invocations per workgroup, where recur's elementwise kernels use 256), so there the device
// asks for the adapter's own limits, as recur itself does.
const requiredLimits = {};
if (backend === 'opengl') {
  for (const name in adapter.limits) {
    requiredLimits[name] = adapter.limits[name];
  }
}
const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
const uncaptured = [];
device.addEventListener('uncapturederror', (e) => uncaptured.push(e.error.message));

let failed = 0;
let built = 0;
const fail = (what, message) => {
  failed += 1;
  console.log(`FAIL ${where}: ${what}\n${message.replace(/^/gm, '     ')}`);
};

device.pushErrorScope('validation');
const module = device.createShaderModule({ label: manifest.family, code: manifest.source });
const info = await module.getCompilationInfo();
const moduleError = await device.popErrorScope();
for (const m of info.messages.filter((m) => m.type !== 'error')) {
  console.log(`  ${m.type} ${manifest.family}:${m.lineNum}:${m.linePos}: ${m.message}`);
}
if (moduleError) {
  fail('shader module', moduleError.message);
  process.exit(1);
}

// The shared bind group layouts, each created once in its own error scope; null where that
// failed (its pipelines are then not tried).
const layouts = new Map();
async function pipelineLayout(spec) {
  if (!spec) {
    return 'auto';
  }
  if (!layouts.has(spec.name)) {
    const entries = spec.bindings.map(({ binding, type }) => ({
      binding,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type },
    }));
    device.pushErrorScope('validation');
    const bindGroupLayouts = [device.createBindGroupLayout({ label: spec.name, entries })];
    const layout = device.createPipelineLayout({ label: spec.name, bindGroupLayouts });
    const error = await device.popErrorScope();
    if (error) {
      fail(`bind group layout ${spec.name}`, error.message);
    }
    layouts.set(spec.name, error ? null : layout);
  }
  return layouts.get(spec.name);
}

for (const p of manifest.pipelines) {
  const constants = Object.entries(p.constants)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  const name = `${manifest.family}::${p.entry}${constants ? ` (${constants})` : ''}`;
  const layout = await pipelineLayout(p.layout);
  if (layout === null) {
    fail(name, `not tried: its bind group layout ${p.layout.name} is invalid`);
    continue;
  }
  device.pushErrorScope('internal');
  device.pushErrorScope('validation');
  // Synchronous on purpose: createComputePipelineAsync aborts the process in this build.
  device.createComputePipeline({
    label: name,
    layout,
    compute: { module, entryPoint: p.entry, constants: p.constants },
  });
  const validation = await device.popErrorScope();
  const internal = await device.popErrorScope();
  const error = validation ?? internal;
  if (error) {
    fail(name, error.message);
  } else {
    built += 1;
    console.log(`  ok   ${name}`);
  }
}
if (uncaptured.length > 0) {
  fail('uncaptured device errors', uncaptured.join('\n'));
}
console.log(
  `${where}: ${built} of ${manifest.pipelines.length} pipelines built`,
);
device.destroy();
process.exit(failed > 0 ? 1 : 0);
