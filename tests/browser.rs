//! recur's kernels in a real browser: headless Chromium's WebGPU (on its bundled SwiftShader)
//! replays the selftest's GEMM, recurrent (every cell, forward and backward), optimizer, loss
//! and embedding cases and compares its readbacks with the CPU twins.
//!
//! The cases run here first, each under a device trace (`recur::gpu::trace`): every buffer,
//! host write, dispatch (kernel, bind group, workgroups), copy, clear and readback, and each
//! check as a span of a readback with the CPU twin's values. `tests/browser/replay.js` builds
//! the kernels from the WGSL as the registry assembles it, fills every buffer with NaN,
//! replays the trace and writes its verdict into the page, which `--dump-dom` prints.
//!
//! Without Chromium (`chromium` or `chromium-browser` on PATH, or `RECUR_CHROMIUM`) the test
//! says SKIPPED; with `RECUR_REQUIRE_BROWSER=1` it fails instead (`.ci/run` sets it).
//! `RECUR_REQUIRE_GPU=1` alone does not require a browser: CI's first runs happen before it
//! installs Chromium.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use recur::apps::selftest::{self, TOLERANCE};
use recur::gpu::shaders::{self, BindingKind};
use recur::gpu::trace::{TraceEvent, TracedCommand};
use recur::gpu::{KernelKey, Trace};
use serde_json::{json, Value};

/// The selftest cases the page replays (labels start with one of these).
const CASES: &[&str] = &["gemm", "recurrent", "optim", "loss", "embedding"];

/// How long Chromium may take before the test gives up on it.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn kernels_match_cpu_twins_in_headless_chromium() {
    // A page's WebGPU device has the default limits: the host must choose kernels that fit
    // them, as it does for `RECUR_LIMITS=default`. (This binary's only test, so the first
    // to make the GPU.)
    std::env::set_var("RECUR_LIMITS", "default");
    let Some(gpu) = common::gpu() else { return };
    let Some(chromium) = chromium() else {
        let why = "no chromium on PATH (nor RECUR_CHROMIUM)";
        if std::env::var("RECUR_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("RECUR_REQUIRE_BROWSER=1 but {why}");
        }
        common::skipped(why);
        return;
    };
    let seed: u64 = common::rng("browser").random();
    let started = Instant::now();
    let traced = selftest::run_traced(&gpu, seed, |label| {
        CASES.iter().any(|c| label.starts_with(c))
    });
    let mut cases = Vec::new();
    let mut names = Vec::new();
    for case in traced {
        for r in &case.results {
            assert!(!r.failed(), "natively, {}: {:?}", r.name, r.outcome);
        }
        let trace = case
            .trace
            .unwrap_or_else(|e| panic!("tracing {}: {e:#}", case.label));
        assert!(
            !trace.checks.is_empty(),
            "{} declared no checks",
            case.label
        );
        names.extend(trace.checks.iter().map(|c| c.name.clone()));
        cases.push(case_json(&case.label, &trace));
    }
    let cases_json = json!({ "tolerance": TOLERANCE, "cases": cases }).to_string();
    eprintln!(
        "traced {} checks natively in {:.1} s ({} KiB of JSON)",
        names.len(),
        started.elapsed().as_secs_f64(),
        cases_json.len() / 1024
    );

    let url = serve(cases_json);
    let started = Instant::now();
    let dom = run_chromium(&chromium, &url);
    eprintln!(
        "Chromium replayed them in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let verdict = verdict(&dom).unwrap_or_else(|| {
        let page = dom.split("\n-- chromium's stderr:").next().unwrap_or("");
        panic!(
            "the page wrote no verdict; its DOM:\n{}\n{}",
            tail(page),
            tail(&dom)
        )
    });
    eprintln!("{verdict}");
    for name in &names {
        let line = format!("ok {name}:");
        assert!(
            verdict.lines().any(|l| l.starts_with(&line)),
            "no passing line for {name:?} in the verdict:\n{verdict}"
        );
    }
    let last = verdict.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!("PASS {} checks", names.len()),
        "the page's verdict:\n{verdict}"
    );
}

/// Chromium's path: `RECUR_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RECUR_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(match i <= chunk.len() {
                true => ABC[(n >> (18 - 6 * i) & 63) as usize] as char,
                false => '=',
            });
        }
    }
    out
}

/// One traced case as the page reads it (see `tests/browser/replay.js`).
fn case_json(label: &str, trace: &Trace) -> Value {
    let mut kernels: Vec<KernelKey> = Vec::new();
    let mut kernel_id = |k: &KernelKey| match kernels.iter().position(|x| x == k) {
        Some(i) => i,
        None => {
            kernels.push(k.clone());
            kernels.len() - 1
        }
    };
    let mut readbacks = 0;
    let events: Vec<Value> = trace
        .events
        .iter()
        .map(|e| match e {
            TraceEvent::Write {
                buffer,
                offset,
                data,
            } => json!({ "write": { "buffer": buffer, "offset": offset, "data": b64(data) } }),
            TraceEvent::Readback {
                buffer,
                offset,
                data,
            } => {
                readbacks += 1;
                json!({ "readback": { "buffer": buffer, "offset": offset, "bytes": data.len() } })
            }
            TraceEvent::Submit(commands) => {
                let commands: Vec<Value> = commands
                    .iter()
                    .map(|c| match c {
                        TracedCommand::Dispatch {
                            kernel,
                            bindings,
                            groups,
                        } => {
                            let bindings: Vec<Value> = bindings
                                .iter()
                                .map(|b| json!([b.binding, b.buffer, b.offset, b.size]))
                                .collect();
                            json!({ "dispatch": {
                                "kernel": kernel_id(kernel), "bindings": bindings, "groups": groups
                            } })
                        }
                        TracedCommand::Copy {
                            src,
                            src_offset,
                            dst,
                            dst_offset,
                            bytes,
                        } => json!({ "copy": [src, src_offset, dst, dst_offset, bytes] }),
                        TracedCommand::Clear { buffer } => json!({ "clear": buffer }),
                    })
                    .collect();
                json!({ "submit": commands })
            }
        })
        .collect();
    let mut sources = HashMap::new();
    let kernels: Vec<Value> = kernels
        .iter()
        .map(|k| {
            let family = shaders::family(k.family).expect("a traced kernel's family is listed");
            sources
                .entry(k.family)
                .or_insert_with(|| shaders::full_source(family));
            let entry = family
                .entry_point(k.entry)
                .expect("a traced entry point is listed");
            let layout = entry.layout.map(|l| {
                l.bindings
                    .iter()
                    .map(|&(binding, kind)| {
                        let kind = match kind {
                            // The trace folds a dynamic offset into the range it records.
                            BindingKind::Uniform | BindingKind::PerDispatch => "uniform",
                            BindingKind::ReadOnlyStorage => "read-only-storage",
                            BindingKind::Storage => "storage",
                        };
                        json!([binding, kind])
                    })
                    .collect::<Vec<_>>()
            });
            let constants: serde_json::Map<String, Value> = k
                .constants
                .iter()
                .map(|&(n, bits)| (n.to_string(), json!(f64::from_bits(bits))))
                .collect();
            json!({ "family": k.family, "entry": k.entry, "constants": constants, "layout": layout })
        })
        .collect();
    let checks: Vec<Value> = trace
        .checks
        .iter()
        .map(|c| {
            let parts: Vec<Value> = c
                .parts
                .iter()
                .map(|p| {
                    assert!(
                        p.readback < readbacks,
                        "a check names a readback past the end"
                    );
                    let want: Vec<u8> = p.want.iter().flat_map(|w| w.to_le_bytes()).collect();
                    json!({ "readback": p.readback, "offset": p.offset, "want": b64(&want) })
                })
                .collect();
            json!({ "name": c.name, "parts": parts, "tolerance": c.tolerance })
        })
        .collect();
    let buffers: Vec<Value> = trace
        .buffers
        .iter()
        .map(|b| json!({ "size": b.size, "uniform": b.uniform, "storage": b.storage }))
        .collect();
    json!({
        "label": label, "sources": sources, "kernels": kernels, "buffers": buffers,
        "events": events, "checks": checks,
    })
}

/// Serves the page and `cases.json` from 127.0.0.1 on a thread of its own (for as long as
/// the test runs); returns the page's URL.
///
/// The page keeps a request for `/hold` open until it has written its verdict, then asks for
/// `/done`, which answers both: Chromium's virtual time does not advance while a request is
/// pending, so `--virtual-time-budget` cannot run out (and the DOM be dumped) mid-replay.
fn serve(cases_json: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1");
    let port = listener
        .local_addr()
        .expect("the listener's address")
        .port();
    let files: HashMap<&str, (&str, Vec<u8>)> = HashMap::from([
        (
            "/",
            ("text/html", include_bytes!("browser/index.html").to_vec()),
        ),
        (
            "/replay.js",
            (
                "text/javascript",
                include_bytes!("browser/replay.js").to_vec(),
            ),
        ),
        ("/cases.json", ("application/json", cases_json.into_bytes())),
        ("/hold", ("text/plain", Vec::new())),
        ("/done", ("text/plain", Vec::new())),
    ]);
    let respond = move |stream: &mut TcpStream, path: &str| {
        let (status, kind, body) = match files.get(path) {
            Some((kind, body)) => ("200 OK", *kind, body.as_slice()),
            None => ("404 Not Found", "text/plain", &b"not found"[..]),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = String::new();
            if BufReader::new(&mut stream).read_line(&mut request).is_err() {
                continue;
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            match path.as_str() {
                "/hold" => held.push(stream),
                "/done" => {
                    for mut h in held.drain(..) {
                        respond(&mut h, "/hold");
                    }
                    respond(&mut stream, &path);
                }
                _ => respond(&mut stream, &path),
            }
        }
    });
    format!("http://127.0.0.1:{port}/")
}

/// Runs headless Chromium on `url` with WebGPU on SwiftShader; returns the DOM it dumps
/// (and its stderr after it, for a failure's message).
fn run_chromium(chromium: &PathBuf, url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("recur-browser-{}", std::process::id()));
    let mut child = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--enable-unsafe-webgpu",
            "--enable-features=Vulkan",
            "--use-vulkan=swiftshader",
            "--use-webgpu-adapter=swiftshader",
            "--disable-gpu-sandbox",
            "--virtual-time-budget=600000",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for chromium") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let _ = std::fs::remove_dir_all(&profile);
    match status {
        Some(s) if s.success() => format!("{out}\n-- chromium's stderr:\n{}", tail(&err)),
        Some(s) => panic!("chromium exited with {s}; stderr:\n{}", tail(&err)),
        None => panic!(
            "chromium ran past {} s; stderr:\n{}",
            CHROMIUM_TIMEOUT.as_secs(),
            tail(&err)
        ),
    }
}

/// The text of the page's `<pre id="verdict">`, once the page has finished (its first line
/// is then `done`).
fn verdict(dom: &str) -> Option<String> {
    let start = dom.find("<pre id=\"verdict\">")? + "<pre id=\"verdict\">".len();
    let end = start + dom[start..].find("</pre>")?;
    let text = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    let rest = text.strip_prefix("done\n")?;
    Some(rest.trim_end().to_string())
}

fn tail(s: &str) -> &str {
    let n = s.len();
    let mut at = n.saturating_sub(3000);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}
