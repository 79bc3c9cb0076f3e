#!/usr/bin/env bash
# Issue 9 on the lent GPU machine: one phase per device call, back to back on one warm machine (see README beside).
#   bash benchmarks/gpu/run_gpu.sh 0   # ceilings (copy bandwidth, bf16 matmul); build models (image packages only)
#   bash benchmarks/gpu/run_gpu.sh A   # install the staged wheels; vLLM dense; vLLM hybrid (stall diagnosis)
#   bash benchmarks/gpu/run_gpu.sh B   # hybrid retry if A stalled; synth stage vs raw vLLM on the same prompts
#   bash benchmarks/gpu/run_gpu.sh C   # HF generate; SFT dense/hybrid, packing, TRL defaults; GRPO with/without vLLM
#   bash benchmarks/gpu/run_gpu.sh D   # extras if time is left: synth batch 64, HF on the hybrid, CUDA graphs
#   bash benchmarks/gpu/run_gpu.sh F1  # (second machine) hybrid without the hook; synth with the metrics shim
#   bash benchmarks/gpu/run_gpu.sh F2  # synth vs raw again; hybrid with Triton autotuning (ran out of budget)
#   bash benchmarks/gpu/run_gpu.sh G   # next machine, after 0: synth stage vs raw vLLM, each with room to finish
#   bash benchmarks/gpu/run_gpu.sh H   # hybrid in vLLM with autotuning (its start alone took 99 s in F2)
#   bash benchmarks/gpu/run_gpu.sh S   # SFT ours (pure bf16, as the recipes) vs TRL defaults (float32 + autocast)
# benchmarks/results/gpu.md has what each phase measured and why the failed steps failed.
# Every step runs under `timeout` inside the phase's budget (BUDGET seconds, default 560), so a stall costs only
# itself; results go to $NF_WORK/results/*.json, logs to $NF_WORK/logs, both packed into $OUT/phase<X>.tgz.
set -u
phase=${1:?phase 0|A|B|C|D|F1|F2|G|H|S}
START=$(date +%s)
[[ -f /root/carry/install.sh ]] && bash /root/carry/install.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export VLLM_USE_FLASHINFER_SAMPLER=0  # its top-p/top-k kernels JIT-compile with nvcc at first use (minutes)
export NF_WORK=${NF_WORK:-/tmp/nfbench}
W=$NF_WORK
mkdir -p "$W/logs" "$W/results"
BUDGET=${BUDGET:-560}
PY="python3 benchmarks/gpu/run_gpu.py"

step() {  # step NAME MAX_SECONDS CMD...: run within what is left of the budget; log rc, time and GPU memory after
  local name=$1 max=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START) - 20))
  local t=$((max < left ? max : left))
  if ((t < 30)); then
    echo "$name skipped (budget: ${left}s left)" | tee -a "$W/logs/steps.txt"
    return 0
  fi
  local t0=$(date +%s)
  timeout -k 15 "$t" "$@" >"$W/logs/$name.log" 2>&1
  local rc=$?
  python3 -m ray.scripts.scripts stop --force >/dev/null 2>&1 || true  # a synth step's local Ray must not hold the GPU for the next step
  local mem=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader | tr -d ' ')
  echo "$name rc=$rc $(($(date +%s) - t0))s (limit ${t}s) gpu_mem_after=$mem" | tee -a "$W/logs/steps.txt"
  tail -3 "$W/logs/$name.log" | cut -c1-300
}

status_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('status',''))" "$1" 2>/dev/null; }

hybrid_vllm() {  # hybrid_vllm LABEL MAX EXTRA_ENV...: NemotronH in vLLM with stack dumps + Triton cache growth log
  local label=$1 max=$2
  shift 2
  local tc="$W/triton-$label"
  rm -rf "$tc"
  mkdir -p "$tc"
  (while sleep 10; do echo "$(date +%s) $(find "$tc" -name '*.cubin' 2>/dev/null | wc -l)"; done) >"$W/logs/triton_cache-$label.txt" &
  local mon=$!
  step "$label" "$max" env TRITON_CACHE_DIR="$tc" PYTHONPATH="$PWD/benchmarks/gpu/hooks:$PYTHONPATH" \
    NF_STACKDUMP_S=30 NF_STACKDUMP_DIR="$W/logs/stacks-$label" VLLM_LOGGING_LEVEL=DEBUG "$@" \
    $PY vllm_gen --model hybrid --label "$label" --max_num_seqs 512 --runs 512x512x512,256x128x2048 \
    --engine '{"mamba_ssm_cache_dtype": "float32"}'
  kill "$mon" 2>/dev/null
}

hybrid_clean() {  # hybrid_clean LABEL MAX EXTRA_ENV...: NemotronH in vLLM as a user runs it (no stack-dump hook, INFO
  # logs with timestamps), its Triton cache watched: the stall's time and whether kernels compile meanwhile
  local label=$1 max=$2
  shift 2
  local tc="$W/triton-$label"
  rm -rf "$tc"
  mkdir -p "$tc"
  (while sleep 10; do echo "$(date +%s) $(find "$tc" -name '*.cubin' 2>/dev/null | wc -l)"; done) >"$W/logs/triton_cache-$label.txt" &
  local mon=$!
  step "$label" "$max" env TRITON_CACHE_DIR="$tc" "$@" $PY vllm_gen --model hybrid --label "$label" \
    --max_num_seqs 512 --runs 512x512x512,256x128x2048 --engine '{"mamba_ssm_cache_dtype": "float32"}'
  kill "$mon" 2>/dev/null
}

need_models() {  # a fresh machine: ceilings and models first (phase 0's steps), else the phase has nothing to run
  [[ -f $W/results/env.json ]] || step env 60 $PY env
  [[ -d $W/models/dense ]] || step build 150 $PY build
}

case $phase in
0)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  step env 60 $PY env
  step build 150 $PY build
  ;;
A)
  python3 -c "import torch, vllm, ray, trl, transformers, datasets, math_verify; from ray.data.llm import build_processor
print('versions', torch.__version__, vllm.__version__, ray.__version__, trl.__version__, transformers.__version__)" 2>&1 | tail -3
  step vllm_gen-dense 240 $PY vllm_gen --model dense --max_num_seqs 512 --runs 512x512x512,256x128x2048
  hybrid_vllm vllm_gen-hybrid-autotune 330 TRITON_PRINT_AUTOTUNING=1
  ;;
B)
  if [[ $(status_of "$W/results/vllm_gen-dense.json") != ok ]]; then
    step vllm_gen-dense 200 $PY vllm_gen --model dense --max_num_seqs 512 --runs 512x512x512,256x128x2048
  fi
  step synth_raw-dense 150 $PY synth_raw --model dense
  step synth-dense-bs16 200 $PY synth --model dense --batch_size 16
  if [[ $(status_of "$W/results/vllm_gen-hybrid-autotune.json") != ok ]]; then
    hybrid_vllm vllm_gen-hybrid-firstconfig 200 VLLM_TRITON_FORCE_FIRST_CONFIG=1
  fi
  ;;
C)
  step hf_gen-dense 80 $PY hf_gen --model dense --batch 64,256 --prompt_len 512 --new 128
  step sft-dense-ours 90 $PY sft --model dense --variant ours
  step sft-hybrid-ours 120 $PY sft --model hybrid --variant ours --steps 15
  step sft-dense-packed 90 $PY sft --model dense --variant packed
  step sft-hybrid-packed 60 $PY sft --model hybrid --variant packed --steps 15
  step grpo-colocate 180 $PY grpo --vllm colocate --steps 5
  step grpo-none 100 $PY grpo --vllm none --steps 3
  step sft-dense-trl_default 90 $PY sft --model dense --variant trl_default
  ;;
F1)  # second machine: hybrid without the diagnosis hook; synth stage with the log_engine_metrics fix
  hybrid_clean vllm_gen-hybrid-firstconfig-clean 240 VLLM_TRITON_FORCE_FIRST_CONFIG=1
  step synth-dense-bs16-fix 150 $PY synth --model dense --batch_size 16 --no_ray_metrics
  step synth-dense-bs64-fix 140 $PY synth --model dense --batch_size 64 --no_ray_metrics
  ;;
F2)
  step synth_raw-dense 130 $PY synth_raw --model dense
  step synth-dense-bs16-fix 130 $PY synth --model dense --batch_size 16 --no_ray_metrics
  step synth-dense-bs64-fix 120 $PY synth --model dense --batch_size 64 --no_ray_metrics
  hybrid_clean vllm_gen-hybrid-autotune-clean 420 TRITON_PRINT_AUTOTUNING=1
  if [[ $(status_of "$W/results/vllm_gen-hybrid-autotune-clean.json") != ok ]]; then
    hybrid_clean vllm_gen-hybrid-spawn 200 VLLM_WORKER_MULTIPROC_METHOD=spawn VLLM_TRITON_FORCE_FIRST_CONFIG=1
  fi
  ;;
G)  # F1/F2's synth steps failed on missing prompts (fixed: synth writes them) and then on the step limits
  need_models
  step synth_raw-dense 160 $PY synth_raw --model dense
  step synth-dense-bs16 220 $PY synth --model dense --batch_size 16 --no_ray_metrics
  step synth-dense-bs64 150 $PY synth --model dense --batch_size 64 --no_ray_metrics
  ;;
H)  # the first-config run started in 47 s and generated; this one measures what autotuned kernels are worth
  need_models
  hybrid_clean vllm_gen-hybrid-autotune-clean 500 TRITON_PRINT_AUTOTUNING=1
  ;;
S)  # phase C's `ours` loaded float32 too (TRL's ModelConfig.dtype default), so it measured TRL defaults twice
  need_models
  step sft-dense-ours 100 $PY sft --model dense --variant ours
  step sft-dense-trl_default 100 $PY sft --model dense --variant trl_default
  step sft-dense-packed 100 $PY sft --model dense --variant packed
  step sft-hybrid-ours-b2 130 $PY sft --model hybrid --variant ours --steps 12 --batch 2 --label sft-hybrid-ours-b2
  ;;
D)
  [[ -d $W/models/dense ]] || step build 150 $PY build
  step sft-hybrid-ours-b2 120 $PY sft --model hybrid --variant ours --steps 12 --batch 2 --label sft-hybrid-ours-b2
  step hf_gen-hybrid 90 $PY hf_gen --model hybrid --batch 16,64 --prompt_len 128 --new 128
  # CUDA graphs without torch.compile (vLLM's breakable graphs): the launch overhead eager mode pays, without
  # the Inductor compile that outran 6 minutes in the README's run.
  step vllm_gen-dense-cudagraph 200 env VLLM_USE_BREAKABLE_CUDAGRAPH=1 $PY vllm_gen --model dense \
    --label vllm_gen-dense-cudagraph --eager false --max_num_seqs 512 --runs 512x512x512,256x128x2048
  ;;
esac
$PY report "$W/results" | tee "$W/logs/report-$phase.md"
if [[ -n ${OUT:-} ]]; then
  find "$W/logs" -name 'stacks.*' -size +2M -exec sh -c 'tail -c 2000000 "$1" > "$1.tail" && mv "$1.tail" "$1"' _ {} \;
  tar czf "$OUT/phase$phase.tgz" -C "$W" results logs
  ls -la "$OUT"
fi
