#!/usr/bin/env bash
# KDN's GPU measurements on a Linux host with an NVIDIA GPU, in parts:
#   bash tools/gpu/measure.sh [--out DIR] <part> [<part> ...]
# from the repository root, after `npm ci` and `bash tools/gpu/prep.sh check` (on a host prepared with
# `prep.sh pack`: after `source .gpu/activate`). Every step runs under its own timeout, well above its benchmark's
# --max-seconds, and leaves its output and log in DIR (default .tmp/gpu-results, git-ignored) as soon as it ends, so
# an interrupted run keeps the steps before. DIR holds the results of one commit: source.json names it, and a run
# from another commit is refused until DIR is emptied. The part `merge` turns DIR's files into the current results
# files (bench/results/ttft-gpu.json, engine-gpu.json, gpu/profile-forward.json and gpu/compare-transformers.json;
# see bench/HISTORY.md).
# The short contexts warm the recompute up once (its first run in a process compiles the pipelines); the long ones
# do not (a 32k recompute takes seconds), so their first recompute includes that. Times are from one H200 host:
#   check    the WebGPU kernel, backend, injector and recorder tests (tensor-core kernels included)    ~1 min
#   profile  where an injected query's time goes, 8B shape at 8k and 32k                               ~2 min
#   forward  kernel by kernel GPU times of a question at 8k and a 4096-token prefill chunk, 8B and 1B  ~2 min
#   8b       8B TTFT at 1k, 4k and 8k, every mode (context KV computed by the engine)                  ~3 min
#   8b-long  8B TTFT at 16k and 32k, every mode, the inject modes on synthetic KV                      ~3 min
#   1b       1B TTFT at 1k, 4k, 8k, every mode; 16k and 32k every mode on synthetic KV                 ~2 min
#   engine   engine prefill and decode throughput against transformers, 1B and 8B                      ~6 min
#   compare  the engine's logits and greedy tokens against transformers, four architectures
#   sass     the driver's machine code for the tensor-core kernels (needs CUDA's nvdisasm)              ~1 min
#   blend    the blend kernels' and backend's tests, then 8B and 1B TTFT at 8k and 32k in 8 chunks: blend against
#            injection (int4, synthetic KV) and the peer (bench/results/ttft-blend-gpu.json)               ~6 min
#   fidelity the fidelity benchmark's whole grid on the shipped model (oracle rows too), one run per set   ~9 min
#   expand   the transform-codec expansion test, then its GB/s (fp16-equivalent) against int4, 8B and 1B head shapes;
#            the injector's host side (staging, submitting, dispatches) for an 8B 8k int4 context
#   delivery 8B TTFT at 8k and 16k in one run (synthetic KV): fp16, int4 and transform-codec injection, a repeated
#            context from the hot tier, the peer's full prefill and its host-memory hit (pinned KV copied in, then
#            the question); then int4 and transform injection with the engine on its own thread, as kdn runs it,
#            over sockets and the same-host fast path, beside the host-memory hit                          ~6 min
#   delivery-long  the same TTFT modes at 32k                                                             ~5 min
#   codec-ttft 8B TTFT at 8k, 16k and 32k in one run, in process: int4 and transform-codec injection over sockets and
#            the same-host fast path, the hot tier, the peer's full prefill and its host-memory hit
#            (bench/results/ttft-codecs-gpu.json)                                                        ~2 min
#   fastpath delivery's stage profile of an 8k context (32 chunks of 256 tokens), the socket path beside the
#            same-host fast path (the edge's /dev/shm mirror), then 8k TTFT over sockets against the fast path   ~4 min
#   formats  the same-host fast path with KV format 2 (layers checked with BLAKE3) against format 1 (sha256): delivery
#            stage by stage, both formats side by side in one run; then 8B TTFT at 8k (int4, transform codec), engine
#            on its own thread as kdn runs it, four runs in the order 2, 1, 1, 2 (bench/results/delivery-formats-gpu.json,
#            ttft-formats-gpu.json)
#   shm-order 8B TTFT at 8k over the fast path, engine on its own thread: fetch threads handing the context's objects
#            over interleaved (kdn's overlapped path) against each object whole, four runs in the order interleaved,
#            whole, whole, interleaved (bench/results/ttft-shm-order-gpu.json)
#   ab       this checkout against the commits AB_BASE names (AB_BASE="<commit> [<commit> ...]" bash tools/gpu/measure.sh
#            ab): 8B TTFT at 8k (int4) over the fast path (AB_PATH=http: over sockets), engine on its own thread,
#            beside the peer's host-memory hit;
#            one run per side in the order this, base1, base2, ..., then back (this, base, base, this for one base),
#            each base from a git worktree sharing node_modules (bench/results/ttft-ab-shm-gpu.json, over sockets
#            ttft-ab-http-gpu.json; each record marked with its side and commit; this checkout may be its HEAD plus
#            uncommitted changes)                                                                       ~1 min a run
#   placed   the fast path's objects routed to a thread that places them as the engine's thread does (no GPU): when
#            every object's layer 0 was placed, lowest layer first (Session's order) against each object's blocks as
#            they come, stage orders A B C then C B A (bench/results/delivery-placed-gpu.json)             ~1 min
#   timeline 8B TTFT at 8k and 16k (int4, fast path, engine on its own thread) with the engine's timeline of every
#            measured query (bench/run.ts ttft --timeline; ttft-timeline-gpu-runs.json)                  ~2 min
#   overlap-long 8B TTFT at 32k over the fast path: the question under the context's arrival against chunk by chunk,
#            in the order overlapped, sequential, sequential, overlapped (what OVERLAP_MAX_CHUNKS rests on) ~8 min
#   verify-ab 8B TTFT at 8k and 16k over the fast path, engine on its own thread: layers verified before the engine
#            reads them against alongside (--shm-verify), in the order before, alongside, alongside, before, with the
#            engine's timeline of every measured query (ttft-verify-*-runs.json)                          ~6 min
#   idle     8B TTFT at 8k and 16k over the fast path, engine on its own thread: int4, the hot tier and the peer's
#            host-memory hit, with every mode's measured queries (the peer's too) after 500 ms of GPU idle against
#            none (ttft --idle-ms), in the order 0, 500, 500, 0 (bench/results/ttft-idle-gpu.json)            ~5 min
#   goals    the delivery goals as kdn runs them (engine on its own thread, same-host fast path): 8B TTFT at 8k and
#            16k for fp16 and int4 injection and a repeated context from the hot tier, beside the peer's host-memory
#            hit, with the engine's timelines (bench/results/ttft-goals-gpu.json)                          ~4 min
#   goals-long the same at 32k                                                                            ~5 min
#   thread-profile where the engine's thread goes while it places an 8k int4 context (8B, engine on its own thread,
#            over sockets then the fast path): every thread's CPU profile with V8's collections traced, then each
#            thread's functions while placing (bench/results/gpu/engine-thread-profile-h100.json)          ~2 min
#   fusions  what the fusions of a layer's projections gain: the 8B shape's projections and post-attention norm per
#            layer with q, k, v and gate, up part by part (seven matmuls), each stack as one split product
#            (kernels/matmul-stacked.ts: four), and that with the norm in the output projection's reduction
#            (kernels/matmul-add-norm.ts), at a question's 64 rows and 256, in the order separate, stacked, fused, fused,
#            stacked, separate (tools/gpu/profile-projection-fusions.ts)                                   ~1.5 min
#   poll     what a pending answer from Dawn costs the waiting thread: its event loop's active share and garbage
#            collections while awaiting GPU work, against sleeping as long (bench/results/gpu/dawn-poll-cost.json) ~1 min
#   handover 8B TTFT at 8k, engine on its own thread: KV blocks from the fetch threads straight to it against
#            through the event loop, four runs in the order direct, loop, loop, direct                   ~5 min
#   receive  8B TTFT at 8k, engine on its own thread as kdn runs it, over sockets and the same-host fast path: fetch
#            threads receiving into the buffers the engine sends back against a new buffer per object, four runs in
#            the order kept, new, new, kept (bench/results/ttft-receive-gpu.json)                           ~5 min
#   spool    8B int4 TTFT at 8k then 16k over sockets, engine on its own thread: blocks received over HTTP spooled to
#            memory files that its staging reads on libuv's pool, against sent with their bytes (--spool-mib 0), four
#            runs in the order spool, none, none, spool; then the peer's host-memory hit once (ttft-spool-gpu.json)  ~3 min
#   sink     8B int4 TTFT at 8k over sockets and the fast path, engine on its own thread: the sink token computed by
#            every query (--sink prefill) against placed from the hot tier as kdn does (resident), four runs in the
#            order prefill, resident, resident, prefill (bench/results/ttft-sink-gpu.json)                   ~1.5 min
#   load     32 clients against kdn serve on the GPU, continuous batching off against on (load-gpu.json) ~5 min
#   batch    1B and 8B decode tokens/s of 1, 8 and 32 sequences, alone against batched (decode-batch-gpu.json) ~2 min
#   merge    DIR's TTFT, engine, delivery, forward-profile and comparison files into bench/results/
set -u
cd "$(dirname "$0")/../.."
DIR=.tmp/gpu-results
if [ "${1:-}" = "--out" ]; then DIR=${2:?--out needs a folder}; shift 2; fi
[ $# -gt 0 ] || { sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
mkdir -p "$DIR"

source_json() { # the commit this checkout measures, and whether tracked files outside bench/results differ from it
  local commit changed
  commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  changed=$(git status --porcelain --untracked-files=no -- . ':(exclude)bench/results' 2>/dev/null | head -1)
  printf '{"commit": "%s", "uncommittedChanges": %s}\n' "$commit" "$([ -n "$changed" ] && echo true || echo false)"
}

if [ -f "$DIR/source.json" ]; then
  if [ "$(cat "$DIR/source.json")" != "$(source_json)" ]; then
    echo "$DIR holds results of $(cat "$DIR/source.json"), not of this checkout $(source_json): merge or remove them first" >&2
    exit 1
  fi
else
  source_json > "$DIR/source.json"
fi

step() { # step <seconds> <name> <command...>: runs it with a timeout; stdout to <name>.out, stderr to <name>.log
  local seconds=$1 name=$2
  shift 2
  echo "== $name (limit ${seconds}s)"
  local start=$SECONDS
  timeout "$seconds" "$@" >"$DIR/$name.out" 2>"$DIR/$name.log"
  local rc=$?
  echo "   rc $rc after $((SECONDS - start))s"
  tail -n 3 "$DIR/$name.log"
  return $rc
}

json_step() { # like step, for a tool that prints one JSON report on stdout: kept as <name>.json
  local name=$2
  step "$@"
  local rc=$?
  mv "$DIR/$name.out" "$DIR/$name.json"
  return $rc
}

bench() { # bench <seconds> <out> <args...>: one benchmark; its results file (partial too) moves into DIR
  local seconds=$1 out=$2
  shift 2
  step "$seconds" "$out" node --import tsx bench/run.ts "$@" --out "$out"
  mv "bench/results/$out.json" "$DIR/" 2>/dev/null || echo "   no bench/results/$out.json"
}

for part in "$@"; do
  case "$part" in
    check)
      # CI=true: a missing GPU adapter fails the tests instead of skipping them.
      step 240 check env CI=true node node_modules/mocha/bin/mocha.js test/engine/webgpu-kernels.test.ts test/engine/webgpu-backend.test.ts \
        test/engine/webgpu-kv-injector.test.ts test/engine/webgpu-kv-buffer-pool.test.ts test/engine/webgpu-recorder.test.ts \
        test/engine/hot-tier.test.ts test/engine/transform-inject.test.ts \
        test/engine/batch-forward.test.ts test/engine/webgpu-matmul-stacked.test.ts ;;
    profile)
      json_step 200 profile-question-8b node --import tsx tools/gpu/profile-question.ts --shape llama3.1-8b --contexts 8192,32768 --codecs fp16,int4 ;;
    forward)
      for shape in llama3.1-8b llama3.2-1b; do
        json_step 200 "profile-forward-$shape" node --import tsx tools/gpu/profile-forward.ts --shape "$shape" --context 8192 --chunk 4096
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
    compare)
      step 300 compare-transformers python3 tools/gpu/compare-transformers.py --backend webgpu --dtype float16 --out "$DIR/compare-transformers.json" ;;
    sass)
      step 120 kernel-sass node --import tsx tools/gpu/kernel-sass.ts --out "$DIR/sass" --nvdisasm "$(command -v nvdisasm || echo /usr/local/cuda/bin/nvdisasm)" ;;
    blend)
      step 240 blend-check env CI=true node node_modules/mocha/bin/mocha.js test/engine/webgpu-blend-kernels.test.ts \
        test/engine/webgpu-backend.test.ts -g blend
      for shape in 8b:llama3.1-8b 1b:llama3.2-1b; do
        bench 240 "ttft-blend-${shape%%:*}" ttft --shape "${shape#*:}" --contexts 8192,32768 --chunks 8 --question 64 --backend webgpu \
          --kv synthetic --modes blend-int4,inject-int4,peer --runs 3 --warmup 1 --recompute-warmup 0 --max-seconds 180
      done ;;
    fidelity)
      for set in document composed; do
        bench 480 "fidelity-$set" fidelity --backend webgpu --sets "$set" --modes prefix-chained,independent,blend,oracle --ratios 0.05,0.1,0.15,0.2,0.3,0.5
      done ;;
    expand)
      step 240 expand-check env CI=true node node_modules/mocha/bin/mocha.js test/engine/webgpu-kv-expand-transform.test.ts
      for shape in 8b:8,128 1b:8,64; do
        json_step 120 "profile-expand-${shape%%:*}" node --import tsx tools/gpu/profile-expand.ts --shape "${shape#*:}" \
          --tokens 256 --reps 50
      done
      json_step 120 profile-inject-8b node --import tsx tools/gpu/profile-inject.ts --shape 32,8,128 --chunks 32 --passes 5 ;;
    delivery|delivery-long)
      contexts=8192,16384
      [ "$part" = delivery-long ] && contexts=32768
      bench 540 "ttft-delivery-gpu-$part" ttft --shape llama3.1-8b --contexts "$contexts" --question 64 --backend webgpu \
        --kv synthetic --modes inject,inject-int4,inject-transform,inject-hot,peer,peer-host-hit --runs 3 --warmup 1 \
        --recompute-warmup 0 --max-seconds 460
      # As kdn runs it: the engine on its own thread, over sockets and the same-host fast path, beside the anchor.
      [ "$part" = delivery ] && bench 300 ttft-delivery-gpu-engine-thread ttft --shape llama3.1-8b --contexts "$contexts" \
        --question 64 --backend webgpu --kv synthetic --modes inject-int4,inject-transform,peer-host-hit --edge-shm \
        --engine-thread --runs 3 --warmup 1 --recompute-warmup 0 --max-seconds 260 ;;
    codec-ttft)
      bench 420 ttft-codecs-gpu-all ttft --shape llama3.1-8b --contexts 8192,16384,32768 --question 64 --backend webgpu \
        --kv synthetic --modes inject-int4,inject-transform,inject-hot,peer,peer-host-hit --edge-shm --runs 3 --warmup 1 \
        --recompute-warmup 0 --max-seconds 400 ;;
    fastpath)
      # Delivery stage by stage, the socket path beside the same-host fast path (the edge's /dev/shm mirror); then
      # TTFT over loopback HTTP and again over the fast path, against the peer's host-memory hit.
      bench 200 delivery-gpu-8k delivery --objects 32 --tokens 256 --codecs int4,fp16 --rounds 3 \
        --stages ceiling,threads,shm-read,shm,gpu-staged,gpu,engine,shm-engine
      bench 300 ttft-delivery-gpu-shm ttft --shape llama3.1-8b --contexts 8192 --question 64 \
        --backend webgpu --kv synthetic --modes inject-int4,inject-transform,peer-host-hit --edge-shm --runs 3 --warmup 1 \
        --recompute-warmup 0 --max-seconds 260 ;;
    formats)
      bench 240 delivery-formats-gpu delivery --objects 32 --tokens 256 --codecs int4,fp16 --rounds 3 --format-versions 1,2 \
        --stages shm-read,shm,shm-interleaved,shm-whole,shm-engine
      for run in 1-2 2-1 3-1 4-2; do
        bench 200 "ttft-formats-$run" ttft --shape llama3.1-8b --contexts 8192 --question 64 --backend webgpu \
          --kv synthetic --modes inject-int4,inject-transform,peer,peer-host-hit --edge-shm --engine-thread --runs 5 --warmup 1 \
          --recompute-warmup 0 --format-version "${run#*-}" --max-seconds 170
      done ;;
    shm-order)
      for run in 1-interleaved 2-whole 3-whole 4-interleaved; do
        bench 200 "ttft-shm-order-$run" ttft --shape llama3.1-8b --contexts 8192 --question 64 --backend webgpu \
          --kv synthetic --modes inject-int4,inject-transform,peer-host-hit --edge-shm --engine-thread --runs 5 --warmup 1 \
          --recompute-warmup 0 --shm-order "${run#*-}" --max-seconds 170
      done ;;
    ab)
      read -r -a bases <<< "${AB_BASE:?ab compares with the commits AB_BASE names: AB_BASE=\"<commit> [<commit> ...]\"}"
      case "${AB_PATH:-shm}" in
        shm) path_flag=--edge-shm ;;
        http) path_flag= ;;
        *) echo "AB_PATH is shm (the same-host fast path, default) or http (sockets), not $AB_PATH" >&2; exit 2 ;;
      esac
      git worktree prune
      sides=(this)
      printf '{' > "$DIR/ab-bases.json"
      for i in "${!bases[@]}"; do
        side=base$((i + 1))
        rm -rf ".tmp/ab-$side"
        git worktree add --detach ".tmp/ab-$side" "${bases[$i]}" >/dev/null || exit 1
        ln -s "$PWD/node_modules" ".tmp/ab-$side/node_modules"
        [ "$i" -gt 0 ] && printf ', ' >> "$DIR/ab-bases.json"
        printf '"%s": "%s"' "$side" "$(git -C ".tmp/ab-$side" rev-parse HEAD)" >> "$DIR/ab-bases.json"
        sides+=("$side")
      done
      echo '}' >> "$DIR/ab-bases.json"
      order=("${sides[@]}")
      for ((i = ${#sides[@]} - 1; i >= 0; i--)); do order+=("${sides[$i]}"); done
      for n in "${!order[@]}"; do
        side=${order[$n]} tree=.
        [ "$side" != this ] && tree=.tmp/ab-$side
        name=ttft-ab-$((n + 1))-$side
        step 150 "$name" bash -c "cd $tree && exec node --import tsx bench/run.ts ttft --shape llama3.1-8b --contexts 8192 \
          --question 64 --backend webgpu --kv synthetic --modes inject-int4,peer-host-hit $path_flag --engine-thread \
          --runs 5 --warmup 1 --recompute-warmup 0 --max-seconds 120 --out $name"
        mv "$tree/bench/results/$name.json" "$DIR/" 2>/dev/null || echo "   no $name.json"
      done
      for side in "${sides[@]:1}"; do git worktree remove --force ".tmp/ab-$side"; done ;;
    placed)
      for order in a:shm-interleaved,shm-placed,shm-placed-arrival b:shm-placed-arrival,shm-placed,shm-interleaved; do
        bench 120 "delivery-placed-${order%%:*}" delivery --objects 32 --tokens 256 --codecs int4 --rounds 4 --stages "${order#*:}"
      done ;;
    fusions)
      json_step 180 profile-projection-fusions node --import tsx tools/gpu/profile-projection-fusions.ts --shape llama3.1-8b --rows 64,256 ;;
    poll)
      json_step 60 dawn-poll-cost-gpu node --import tsx tools/gpu/dawn-poll-cost.ts ;;
    timeline)
      # Where an injected query's time goes, run by run: the engine's timeline of each measured query (gates, the
      # question's pieces and when the GPU ran them, the injector's sends and reads) beside the TTFT records.
      bench 150 ttft-timeline-gpu ttft --shape llama3.1-8b --contexts 8192,16384 --question 64 --backend webgpu --kv synthetic \
        --modes inject-int4,peer-host-hit --edge-shm --engine-thread --runs 5 --warmup 1 --recompute-warmup 0 --max-seconds 120 \
        --timeline "$DIR/ttft-timeline-gpu-runs.json" ;;
    verify-ab)
      # The same-host fast path's fetch threads verifying each layer before handing it over, against announcing every
      # layer at once and verifying while the engine's thread reads them into staging (FetchPoolOptions.verifyAlongside).
      n=0
      for verify in before alongside alongside before; do
        n=$((n + 1))
        bench 150 "ttft-verify-$n-$verify" ttft --shape llama3.1-8b --contexts 8192,16384 --question 64 --backend webgpu \
          --kv synthetic --modes inject-int4,peer-host-hit --edge-shm --engine-thread --shm-verify "$verify" --runs 3 \
          --warmup 1 --recompute-warmup 0 --max-seconds 130 --timeline "$DIR/ttft-verify-$n-$verify-runs.json"
      done ;;
    idle)
      # A GPU that idled runs its next work at lower clocks. The peer's queries run back to back and KDN's after their
      # own set-up, so the same idle before every measured query of both says how much of the gap that is.
      n=0
      for idle in 0 500 500 0; do
        n=$((n + 1))
        bench 150 "ttft-idle-$n-$idle" ttft --shape llama3.1-8b --contexts 8192,16384 --question 64 --backend webgpu \
          --kv synthetic --modes inject-int4,inject-hot,peer-host-hit --edge-shm --engine-thread --idle-ms "$idle" --runs 3 \
          --warmup 1 --recompute-warmup 0 --max-seconds 120
      done ;;
    goals|goals-long)
      contexts=8192,16384 out=ttft-goals-8k-16k
      [ "$part" = goals-long ] && contexts=32768 out=ttft-goals-32k
      bench 290 "$out" ttft --shape llama3.1-8b --contexts "$contexts" --question 64 --backend webgpu --kv synthetic \
        --modes inject,inject-int4,inject-hot,peer-host-hit --edge-shm --engine-thread --runs 3 --warmup 1 --recompute-warmup 0 \
        --max-seconds 250 --timeline "$DIR/$out-runs.json" ;;
    thread-profile)
      mkdir -p "$DIR/thread-profile"
      step 240 ttft-thread-profile node --trace-gc --cpu-prof --cpu-prof-dir="$DIR/thread-profile" --cpu-prof-interval 200 \
        --import tsx bench/run.ts ttft --shape llama3.1-8b --contexts 8192 --question 64 --backend webgpu --kv synthetic \
        --modes inject-int4 --edge-shm --engine-thread --runs 10 --warmup 2 --recompute-warmup 0 --max-seconds 150 \
        --out ttft-thread-profile
      mv bench/results/ttft-thread-profile.json "$DIR/" 2>/dev/null || echo "   no bench/results/ttft-thread-profile.json"
      json_step 120 thread-profile-summary node --import tsx tools/gpu/cpu-profile-summary.ts "$DIR/thread-profile" --top 40 \
        --during writeInLayerOrder ;;
    overlap-long)
      # 8B TTFT at 32k (128 chunks) over the fast path, engine on its own thread: the question under the context's
      # arrival against chunk by chunk (kdn's path past OVERLAP_MAX_CHUNKS), in the order overlapped, sequential,
      # sequential, overlapped, beside the host-memory hit.
      n=0
      for path in overlapped sequential sequential overlapped; do
        n=$((n + 1))
        bench 150 "ttft-overlap-long-$n-$path" ttft --shape llama3.1-8b --contexts 32768 --question 64 --backend webgpu \
          --kv synthetic --modes inject-int4,peer-host-hit --edge-shm --engine-thread --inject-path "$path" --runs 3 --warmup 1 \
          --recompute-warmup 0 --max-seconds 130
      done ;;
    handover)
      # 8B TTFT at 8k with the engine on its own thread, as kdn runs it: the fetch pool's blocks straight from the
      # fetch threads to the engine's (direct) against through the event loop (loop), in the order direct, loop,
      # loop, direct so that drift hits both alike.
      for run in 1-direct 2-loop 3-loop 4-direct; do
        bench 200 "ttft-handover-$run" ttft --shape llama3.1-8b --contexts 8192 --question 64 --backend webgpu \
          --kv synthetic --modes inject,inject-int4 --fetch-threads 8 --runs 5 --warmup 1 --recompute-warmup 0 \
          --engine-thread --hand-over "${run#*-}" --max-seconds 170
      done ;;
    receive)
      for run in 1-64 2-0 3-0 4-64; do
        bench 200 "ttft-receive-$run" ttft --shape llama3.1-8b --contexts 8192 --question 64 --backend webgpu \
          --kv synthetic --modes inject,inject-int4 --edge-shm --engine-thread --receive-buffer-mib "${run#*-}" --runs 5 \
          --warmup 1 --recompute-warmup 0 --max-seconds 170
      done ;;
    spool)
      for ctx in 8192 16384; do
        for run in 1-2048 2-0 3-0 4-2048; do
          bench 90 "ttft-spool-$ctx-$run" ttft --shape llama3.1-8b --contexts "$ctx" --question 64 --backend webgpu --kv synthetic \
            --modes inject-int4 --engine-thread --runs 5 --warmup 1 --recompute-warmup 0 --spool-mib "${run#*-}" --max-seconds 80
        done
      done
      bench 90 ttft-spool-peer ttft --shape llama3.1-8b --contexts 8192,16384 --question 64 --backend webgpu --kv synthetic \
        --modes peer-host-hit --runs 3 --max-seconds 80 ;;
    sink)
      for run in 1-prefill 2-resident 3-resident 4-prefill; do
        bench 100 "ttft-sink-$run" ttft --shape llama3.1-8b --contexts 8192 --question 64 --backend webgpu --kv synthetic \
          --modes inject-int4 --edge-shm --engine-thread --runs 5 --warmup 1 --recompute-warmup 0 --sink "${run#*-}" --max-seconds 90
      done ;;
    batch)
      bench 200 decode-batch-gpu-1b decode-batch --shape llama3.2-1b --sequences 1,8,32 --context 1024 --decode 32 --rounds 2 --backend webgpu
      bench 360 decode-batch-gpu-8b decode-batch --shape llama3.1-8b --sequences 1,8,32 --context 1024 --decode 16 --rounds 2 --backend webgpu ;;
    load)
      # On the shipped model; each throughput round runs batching off and on, the order flipping between rounds.
      bench 560 load-gpu load --backend webgpu --modes thread --clients 1,32 --seconds 15 --rounds 2 --batch 32 ;;
    merge)
      node --import tsx tools/gpu/merge-results.ts "$DIR" ;;
    *)
      echo "unknown part $part (check, profile, forward, 8b, 8b-long, 1b, engine, compare, sass, blend, fidelity, expand, batch, receive, spool, sink," \
        "delivery, delivery-long, fastpath, formats, shm-order, placed, fusions, poll, timeline, overlap-long, verify-ab, idle, goals, goals-long, thread-profile, ab, handover, load, merge)" >&2
      exit 2 ;;
  esac
done
