#!/usr/bin/env bash
# gpu-check.sh: the prepared check for a machine with a real GPU and no Rust toolchain.
#
#   scripts/gpu-check.sh OUTDIR [path/to/recur]
#
# Takes a release binary built elsewhere (x86-64 Linux; default target/release/recur),
# reports the GPU and whether a Vulkan loader and driver are present, brings its own loader
# (Debian's libvulkan1 carried in .gl/, see scripts/fetch-vulkan-loader.sh) and ICD file where
# the driver's libraries are there but those are missing, then runs `recur info`,
# `recur selftest`, `recur bench --quick`, two LSTM shapes with the step index passed both
# ways, and the recurrent rules' choices (path, stack schedule, f16 storage) against their
# alternatives. Where PyTorch with CUDA is installed, it also runs the same LSTM and GRU
# shapes through cuDNN and prints the ratios. Everything it prints also goes to
# OUTDIR/gpu-check.log. Each step has a time limit; the whole stays well under 10 minutes.
set -u
out=${1:?usage: scripts/gpu-check.sh OUTDIR [path/to/recur]}
bin=${2:-target/release/recur}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
exec > >(tee -a "$out/gpu-check.log") 2>&1
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "machine"
uname -a
date -u
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi | tee "$out/nvidia-smi.txt"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
else
    echo "nvidia-smi: not found"
fi

step "Vulkan loader and driver"
vkdir=/tmp/recur-vulkan
mkdir -p "$vkdir"
if ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
    echo "loader: $(ldconfig -p | grep 'libvulkan.so.1' | head -n 1)"
else
    echo "loader: libvulkan.so.1 not found on the system"
    deb=$(ls "$here"/.gl/libvulkan1_*.deb 2>/dev/null | head -n 1)
    if [ -n "$deb" ]; then
        dpkg -x "$deb" "$vkdir/root"
        lib=$(dirname "$(find "$vkdir/root" -name 'libvulkan.so.1*' | head -n 1)")
        export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "loader: using the carried $(basename "$deb") from $lib"
    else
        echo "loader: none carried (run scripts/fetch-vulkan-loader.sh where the network is)"
    fi
fi
icds=$(ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/nvidia/share/vulkan/icd.d/*.json 2>/dev/null)
echo "ICD files: ${icds:-none}"
nvlib=$(ldconfig -p 2>/dev/null | grep -o '/[^ ]*libGLX_nvidia.so.0' | head -n 1)
[ -z "$nvlib" ] && nvlib=$(ls /usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.0 /usr/local/nvidia/lib64/libGLX_nvidia.so.0 2>/dev/null | head -n 1)
echo "NVIDIA driver library: ${nvlib:-not found}"
if ! echo "$icds" | grep -qi nvidia; then
    if [ -n "$nvlib" ]; then
        cat > "$vkdir/nvidia_icd.json" <<JSON
{ "file_format_version": "1.0.0", "ICD": { "library_path": "$nvlib", "api_version": "1.3.0" } }
JSON
        export VK_DRIVER_FILES="$vkdir/nvidia_icd.json" VK_ICD_FILENAMES="$vkdir/nvidia_icd.json"
        echo "ICD: none for NVIDIA; wrote $vkdir/nvidia_icd.json pointing at $nvlib"
    fi
elif [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    echo "ICD: using $VK_DRIVER_FILES"
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}

if [ ! -x "$bin" ]; then
    echo "no recur binary at $bin"
    exit 1
fi

step "recur info"
timeout 60 "$bin" info | tee "$out/info.txt"

step "recur selftest"
timeout 120 "$bin" selftest | tee "$out/selftest.txt"
selftest_status=${PIPESTATUS[0]}

step "recur bench --quick"
(cd "$here" && timeout 300 "$bin" bench --quick --json "$out/bench.json") | tee "$out/bench.txt"

step "step index: immediates (the default where offered) against a dynamic offset"
for way in default offset; do
    (cd "$here" && RECUR_STEP_INDEX=$way timeout 90 "$bin" bench rnn --no-torch --cells lstm \
        --shapes 256x32x100,128x1x1000 --json "$out/step-index-$way.json") | tee "$out/step-index-$way.txt"
done

# The rules choose by a cost model whose per-unit bandwidth is a guess (BENCHMARKS.md, issue
# 12): each choice against its alternative, measured, where the model is least sure (small
# batches and small W_hh for the path; a 2-layer stack for the wavefront; f16 storage).
step "the rules' choices against their alternatives: path, stack schedule, precision"
for path in step sequence; do
    (cd "$here" && RECUR_RECURRENT=$path timeout 60 "$bin" bench rnn --quick --no-torch \
        --cells lstm,gru-reset-before --shapes 128x1x1000,64x32x100,112x32x100 \
        --json "$out/path-$path.json") | tee "$out/path-$path.txt"
done
for stack in layers wavefront; do
    (cd "$here" && RECUR_STACK=$stack timeout 45 "$bin" bench rnn --quick --no-torch \
        --cells lstm --layers 2 --shapes 256x32x100,64x32x100 \
        --json "$out/stack-$stack.json") | tee "$out/stack-$stack.txt"
done
for precision in f32 f16; do
    (cd "$here" && RECUR_PRECISION=$precision timeout 45 "$bin" bench rnn --quick --no-torch \
        --cells lstm --shapes 256x32x100,1024x64x100 \
        --json "$out/precision-$precision.json") | tee "$out/precision-$precision.txt"
done

step "PyTorch cuDNN on the same shapes"
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    : > "$out/torch-cuda.jsonl"
    for cell in lstm gru; do
        timeout 120 python3 "$here/tools/torch_bench.py" rnn --device cuda --cell "$cell" \
            --hidden 256 --batch 32 --steps 100 --reps 20 | tee -a "$out/torch-cuda.jsonl"
    done
    python3 - "$out/bench-rnn.json" "$out/torch-cuda.jsonl" <<'PY'
import json, sys
bench = json.load(open(sys.argv[1]))
torch = [json.loads(l) for l in open(sys.argv[2]) if '"rnn"' in l]
for t in torch:
    for r in bench["results"]:
        c = r["case"]
        if c["cell"] == t["cell"] and (c["hidden"], c["batch"], c["steps"]) == (t["hidden"], t["batch"], t["steps"]) and r["gpu"]:
            g = r["gpu"]
            print(f'{t["cell"]} {c["hidden"]}x{c["batch"]}x{c["steps"]}: recur GPU fwd {g["forward"]["median"]*1e3:.2f} ms, '
                  f'f+b {g["forward_backward"]["median"]*1e3:.2f} ms; cuDNN fwd {t["forward"]["median"]*1e3:.2f} ms, '
                  f'f+b {t["forward_backward"]["median"]*1e3:.2f} ms; recur/cuDNN f+b = '
                  f'{g["forward_backward"]["median"] / t["forward_backward"]["median"]:.2f}')
PY
else
    echo "PyTorch with CUDA is not installed here: no cuDNN comparison"
fi

step "done"
echo "selftest exit status: $selftest_status; full output in $out"
exit "$selftest_status"
