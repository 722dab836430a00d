#!/usr/bin/env bash
# The GPU measurements of the TTFT and engine benchmarks, in parts that each fit one device call (10 minutes):
#   bash tools/gpu/measure.sh <part> [<part> ...]
# run on the GPU machine after `source .gpu/activate`, with $OUT set (the device tool sets it). Every step has its own
# timeout, well above its benchmark's --max-seconds, and copies what it wrote into $OUT as soon as it ends, so a call
# cut short keeps the steps before. At most 8 files come back from one call: each part below writes 1 to 4, so run
# one or two parts per call. The short contexts warm the recompute up once (its first run in a process compiles the
# pipelines); the long ones do not (a 32k recompute takes seconds), so their first recompute includes that. Parts:
#   check    the WebGPU kernel, backend and injector tests (tensor-core kernels included)          ~1 min
#   profile  where an injected query's time goes, 8B shape at 8k and 32k                           ~2 min
#   forward  kernel by kernel GPU times of a question at 8k and a 4096-token prefill chunk, 8B and 1B  ~2 min
#   8b       8B TTFT at 1k, 4k and 8k, every mode (context KV computed by the engine)              ~3 min
#   8b-long  8B TTFT at 16k and 32k, every mode, the inject modes on synthetic KV                  ~3 min
#   1b       1B TTFT at 1k, 4k, 8k, every mode; 16k and 32k every mode on synthetic KV             ~2 min
#   engine   engine prefill and decode throughput against transformers, 1B and 8B                  ~6 min
#   sass     the driver's machine code for the tensor-core kernels, with registers and instruction mix  ~1 min
#   blend-check  the blend kernels' and backend's tests (tensor-core kernels included)              ~2 min
#   blend-8b     8B TTFT at 8k and 32k in 8 chunks: blend against inject (int4 and fp16, synthetic KV) and the
#                peer, then the modes in reverse order                                             ~6 min
#   blend-1b     the same for the 1B shape, one order                                              ~3 min
#   fidelity the fidelity benchmark's whole grid (codecs, composition modes, blend) on the demo model   ~3 min
set -u
OUT=${OUT:?set OUT to the folder whose files come back}
cd "$(dirname "$0")/../.."

step() { # step <seconds> <name> <command...>: runs it with a timeout, keeps its log
  local seconds=$1 name=$2
  shift 2
  echo "== $name (limit ${seconds}s)"
  local start=$SECONDS
  timeout "$seconds" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc after $((SECONDS - start))s"
  tail -n 3 "$OUT/$name.log"
}

bench() { # bench <seconds> <out> <args...>: one benchmark; its results file goes to $OUT even when partial
  local seconds=$1 out=$2
  shift 2
  step "$seconds" "$out" node --import tsx bench/run.ts "$@" --out "$out"
  cp "bench/results/$out.json" "$OUT/" 2>/dev/null || echo "   no bench/results/$out.json"
}

for part in "$@"; do
  case "$part" in
    check)
      step 240 check node node_modules/mocha/bin/mocha.js test/engine/webgpu-kernels.test.ts test/engine/webgpu-backend.test.ts \
        test/engine/webgpu-kv-injector.test.ts test/engine/webgpu-kv-buffer-pool.test.ts test/engine/webgpu-recorder.test.ts ;;
    profile)
      step 200 profile-question-8b node --import tsx tools/gpu/profile-question.ts --shape llama3.1-8b --contexts 8192,32768 --codecs fp16,int4
      cp "$OUT/profile-question-8b.log" "$OUT/profile-question-8b.json" ;;
    forward)
      for shape in llama3.1-8b llama3.2-1b; do
        step 200 "profile-forward-$shape" node --import tsx tools/gpu/profile-forward.ts --shape "$shape" --context 8192 --chunk 4096
        cp "$OUT/profile-forward-$shape.log" "$OUT/profile-forward-$shape.json"
      done ;;
    8b)
      bench 420 ttft-gpu-8b ttft --shape llama3.1-8b --contexts 1024,4096,8192 --question 64 --backend webgpu --runs 2 --warmup 1 \
        --recompute-warmup 1 --max-seconds 360 ;;
    8b-long)
      bench 480 ttft-gpu-8b-long ttft --shape llama3.1-8b --contexts 16384,32768 --question 64 --backend webgpu --kv synthetic \
        --runs 2 --warmup 1 --recompute-warmup 0 --max-seconds 400 ;;
    1b)
      bench 300 ttft-gpu-1b ttft --shape llama3.2-1b --contexts 1024,4096,8192 --question 64 --backend webgpu --runs 2 --warmup 1 \
        --recompute-warmup 1 --max-seconds 240
      bench 240 ttft-gpu-1b-long ttft --shape llama3.2-1b --contexts 16384,32768 --question 64 --backend webgpu --kv synthetic \
        --runs 2 --warmup 1 --recompute-warmup 0 --max-seconds 190 ;;
    engine)
      bench 170 engine-gpu-1b engine --shape llama3.2-1b --contexts 1024,4096 --decode 32 --backend webgpu --runs 1 --warmup 1 --max-seconds 130
      bench 200 engine-gpu-8b engine --shape llama3.1-8b --contexts 1024,4096 --decode 16 --backend webgpu --runs 1 --warmup 1 --max-seconds 150 ;;
    blend-check)
      step 240 blend-check node node_modules/mocha/bin/mocha.js test/engine/webgpu-blend-kernels.test.ts test/engine/webgpu-backend.test.ts -g blend ;;
    blend-8b)
      bench 270 ttft-blend-8b ttft --shape llama3.1-8b --contexts 8192,32768 --chunks 8 --question 64 --backend webgpu --kv synthetic \
        --modes inject-int4,blend-int4,inject,blend,peer --runs 3 --warmup 1 --recompute-warmup 0 --max-seconds 220
      bench 200 ttft-blend-8b-reversed ttft --shape llama3.1-8b --contexts 8192,32768 --chunks 8 --question 64 --backend webgpu \
        --kv synthetic --modes blend,inject,blend-int4,inject-int4 --runs 3 --warmup 1 --recompute-warmup 0 --max-seconds 150 ;;
    blend-1b)
      bench 200 ttft-blend-1b ttft --shape llama3.2-1b --contexts 8192,32768 --chunks 8 --question 64 --backend webgpu --kv synthetic \
        --modes inject-int4,blend-int4,inject,blend,peer --runs 3 --warmup 1 --recompute-warmup 0 --max-seconds 150 ;;
    fidelity)
      bench 400 fidelity-gpu fidelity --backend webgpu ;;
    sass)
      step 120 kernel-sass node --import tsx tools/gpu/kernel-sass.ts --out "$OUT/sass" --nvdisasm "$(command -v nvdisasm || echo /usr/local/cuda/bin/nvdisasm)" ;;
    *)
      echo "unknown part $part (check, profile, forward, 8b, 8b-long, 1b, engine, sass, blend-check, blend-8b, blend-1b, fidelity)" >&2
      exit 2 ;;
  esac
done
