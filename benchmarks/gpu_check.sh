#!/usr/bin/env bash
# Every CUDA path of domainvlm, in a few minutes on one GPU: one JSON line per check.
#
#   make env            # or: make env EXTRAS=gpu,dev  for the FAISS-on-GPU check
#   benchmarks/gpu_check.sh
#
# Checks: the GPU-marked tests; a few bf16-mixed steps of every tiny config on CUDA; zeroshot,
# eval zeroshot (bf16 + token merging), kb build and kb search with --device cuda on the
# remote-sensing run just trained; FAISS on the GPU (needs the `gpu` extra); token-merging speed of
# ViT-B-16 at 224 on the GPU. On a machine without a CUDA GPU it says so and exits 0; otherwise
# it exits 1 when any check failed. PY overrides the interpreter (default: make env's venv).
set -u
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
DEPS_HASH=$(sed -n '/^dependencies/,/^\[project.scripts\]/p' pyproject.toml | sha1sum | cut -c1-12)
VENV_PY="${HOME}/.cache/domainvlm/venv-${DEPS_HASH}/bin/python"
if [ -z "${PY:-}" ]; then
    if [ -x "$VENV_PY" ]; then PY="$VENV_PY"; else PY=python3; fi
fi
DVLM=("$PY" -m domainvlm.core.cli)

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "{\"check\": \"gpu\", \"ok\": false, \"error\": \"$PY cannot import torch: run make env first\"}"
    exit 1
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo '{"check": "gpu", "ok": true, "skipped": "no CUDA GPU on this machine: nothing to check"}'
    exit 0
fi
"$PY" -c 'import json, torch; p = torch.cuda.get_device_properties(0); print(json.dumps({"check": "gpu", "ok": True, "device": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "torch": torch.__version__, "cuda": torch.version.cuda}))'

WORK=$(mktemp -d -t dvlm-gpu-check-XXXX)
trap 'rm -rf "$WORK"' EXIT
FAILED=0

# check NAME COMMAND...: runs it, prints {"check", "ok", "seconds", "last"} (last output line)
check() {
    local name=$1
    shift
    local start=$SECONDS
    local log="$WORK/$name.log"
    timeout 240 "$@" >"$log" 2>&1
    local code=$?
    [ $code -eq 0 ] || FAILED=1
    "$PY" - "$name" "$code" "$((SECONDS - start))" "$log" <<'EOF'
import json, sys
name, code, seconds, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lines = [line for line in open(log, errors="replace").read().splitlines() if line.strip()]
print(json.dumps({"check": name, "ok": code == 0, "exit": code, "seconds": seconds,
                  "last": lines[-1][-4000:] if lines else ""}))
EOF
}

check gpu_tests "$PY" -m pytest -q -p no:cacheprovider -m gpu tests

"$PY" benchmarks/tiny_configs_bf16.py --accelerator gpu --steps 3 --work "$WORK/runs" || FAILED=1

CKPT="$WORK/runs/remote_sensing_tiny/checkpoints/last.ckpt"
DATA="$WORK/runs/samples/remote_sensing"
if [ -f "$CKPT" ]; then
    IMAGES=$(find "$DATA/scene_classes" -name '*.tif' | sort | head -4)
    # shellcheck disable=SC2086
    check zeroshot_cuda "${DVLM[@]}" zeroshot --checkpoint "$CKPT" --device cuda \
        --classes "forest,river,highway,industrial" $IMAGES
    check eval_zeroshot_cuda_bf16_tome "${DVLM[@]}" eval zeroshot --checkpoint "$CKPT" \
        --data "$DATA" --device cuda --precision bf16 --token-merging 4
    check kb_build_cuda "${DVLM[@]}" kb build --domain remote_sensing --checkpoint "$CKPT" \
        --out "$WORK/kb" --device cuda
    check kb_search_cuda "${DVLM[@]}" kb search "$WORK/kb" --text "a river" --device cuda
else
    echo '{"check": "cuda_commands", "ok": false, "last": "no remote_sensing/tiny.yaml checkpoint to use"}'
    FAILED=1
fi

check faiss_gpu "$PY" - <<'EOF'
import faiss, numpy as np
if not hasattr(faiss, "StandardGpuResources"):
    raise SystemExit("faiss-cpu is installed: run `make env EXTRAS=gpu,dev` for the faiss-gpu build")
vectors = np.random.default_rng(0).standard_normal((20000, 128)).astype("float32")
cpu = faiss.IndexFlatIP(128)
cpu.add(vectors)
gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
_, expected = cpu.search(vectors[:100], 10)
_, found = gpu.search(vectors[:100], 10)
agreement = float((expected == found).mean())
assert agreement > 0.99, agreement
print(f"flat index on {faiss.get_num_gpus()} GPU(s): top-10 agrees with the CPU on {agreement:.3f}")
EOF

check token_merging_vit_b16_cuda "$PY" benchmarks/token_merging.py --skip-trained --device cuda \
    --vit-batch 64 --vit-rates 1 8 16 --vit-pitome-rates --rounds 5

exit $FAILED
