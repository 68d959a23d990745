#!/usr/bin/env bash
# CI: build the full C++/CUDA extension dit_video._C (CPU kernels + CUDA kernels for sm_80 and
# sm_90a) against the CUDA build of torch, on a machine without a GPU; print ptxas's resource report
# per kernel and arch; fail on any spill; import the module and check both dispatch keys registered.
#
# Run inside the activated CI venv after `pip install -e ".[dev]"`, from anywhere:
#     bash csrc/ci_build.sh            # add --tests to also run tests/csrc
# Needs nvcc (CUDA_HOME, default /usr/local/cuda) and torch's nvidia-* wheels (headers).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
run_tests=0
[[ "${1:-}" == "--tests" ]] && run_tests=1

python - <<'EOF'
import torch
assert torch.version.cuda, f"csrc/ci_build.sh needs the CUDA build of torch, got {torch.__version__}"
print(f"== torch {torch.__version__} (CUDA {torch.version.cuda})")
EOF
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
[[ -x "$CUDA_HOME/bin/nvcc" ]] || { echo "ci_build: no nvcc at $CUDA_HOME/bin/nvcc" >&2; exit 1; }
"$CUDA_HOME/bin/nvcc" --version | tail -1
NV=$(python -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13'))" 2>/dev/null || true)
if [[ -n "$NV" && -d "$NV/include" ]]; then
  export CPATH="$NV/include${CPATH:+:$CPATH}" LIBRARY_PATH="$NV/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0 9.0a}"
export MAX_JOBS="${MAX_JOBS:-2}" DIT_VIDEO_BUILD_EXT=1 DIT_VIDEO_PTXAS_VERBOSE=1

# --no-build-isolation builds with this venv's own build tools: make sure they are there
pip install -q "setuptools>=77" wheel ninja

mkdir -p build
log=build/csrc_ci_build.log
echo "== building dit_video._C (archs: $TORCH_CUDA_ARCH_LIST; log: $log)"
t0=$(date +%s)
if ! pip install -e . --no-build-isolation --no-deps -v >"$log" 2>&1; then
  tail -60 "$log"
  echo "ci_build: FAILED to build dit_video._C" >&2
  exit 1
fi
echo "== build took $(( $(date +%s) - t0 ))s"

# ptxas report: one line per kernel x arch; any spill fails the build.
python - "$log" <<'EOF'
import re
import subprocess
import sys

text = open(sys.argv[1], errors="replace").read()
rows, cur = [], None
for line in text.splitlines():
    m = re.search(r"Compiling entry function '(\S+)' for '(sm_\w+)'", line)
    if m:
        cur = {"fn": m.group(1), "arch": m.group(2), "regs": None, "spill": None, "stack": None}
        rows.append(cur)
        continue
    if cur is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        cur["stack"], cur["spill"] = int(m.group(1)), int(m.group(2)) + int(m.group(3))
    m = re.search(r"Used (\d+) registers", line)
    if m:
        cur["regs"] = int(m.group(1))
if not rows:
    sys.exit("ci_build: no ptxas report in the build log: were the CUDA sources compiled?")
names = subprocess.run(["c++filt"], input="\n".join(r["fn"] for r in rows), capture_output=True, text=True).stdout
for r, name in zip(rows, names.splitlines() or [r["fn"] for r in rows]):
    name = re.sub(r"\(anonymous namespace\)::|dit_video::|\(dit_video::AttnParams\)|\(dit_video::AdaLNParams.*\)", "",
                  name.replace("__nv_bfloat16", "bf16"))
    r["name"] = name.replace("void ", "")
print(f"== ptxas resource report ({len(rows)} kernels x archs)")
print(f"{'kernel':<44}{'arch':>8}{'regs':>6}{'stack B':>9}{'spill B':>9}")
for r in sorted(rows, key=lambda r: (r["name"], r["arch"])):
    print(f"{r['name']:<44}{r['arch']:>8}{r['regs']!s:>6}{r['stack']!s:>9}{r['spill']!s:>9}")
archs = {r["arch"] for r in rows}
bad = [r for r in rows if r["spill"]]
if bad:
    sys.exit(f"ci_build: {len(bad)} kernel(s) spill registers: " + ", ".join(f"{r['name']} {r['arch']}" for r in bad))
if not {"sm_80", "sm_90a"} <= archs:
    sys.exit(f"ci_build: expected sm_80 and sm_90a, ptxas compiled for {sorted(archs)}")
print("== 0 spill bytes on every kernel and arch")
EOF

python - <<'EOF'
import torch

from dit_video.kernels import csrc_ops  # loads the prebuilt dit_video._C (no JIT fallback expected)

assert csrc_ops.ORIGIN.startswith("prebuilt"), csrc_ops.ORIGIN
print(f"== imported {csrc_ops.ORIGIN}")
for op in ("csrc_temporal_attention", "csrc_gated_residual_adaln", "csrc_adaln_modulate"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dit_video::{op}", key), f"{op} has no {key} kernel"
assert csrc_ops.HAS_CUDA_KERNELS
x = torch.randn(2, 3, 4, 16)
m = torch.randn(2, 16)
torch.testing.assert_close(csrc_ops.adaln_modulate(x, m, m),
                           __import__("dit_video.kernels.reference", fromlist=["x"]).adaln_modulate_ref(x, m, m))
print(f"== CPU and CUDA kernels registered; CUDA device available: {torch.cuda.is_available()}")
EOF

if (( run_tests )); then
  python -m pytest -q tests/csrc
fi
echo "== csrc/ci_build.sh total $(( $(date +%s) - start ))s"
