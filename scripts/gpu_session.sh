#!/usr/bin/env bash
# The two back-to-back calls of a lent GPU session (the device tool: at most 64 MiB carried per call, no network,
# machine given back after 30 s idle). Prepare here first (about 3 minutes, .data/ is git-ignored):
#
#   python scripts/pack_cifar.py pack ../shared/datasets/cifar-10-batches-py .data/packed
#
# call 1 (carry .data/packed/data_batch_{1,2,3}.cifarpack, .data/packed/batches.meta, .data/packed/readme.html):
#   ATLIB_COMMIT=$(git rev-parse --short HEAD) bash scripts/gpu_session.sh 1 <seconds>
#       keeps the packed parts in /tmp/packed, runs tests/test_gpu.py, then the benchmark (concurrent runs, Table 3
#       steps with and without cudnn.benchmark, profiles of the Table 3 steps) and the `paper` plan cases.
# call 2, at once (carry data_batch_{4,5} and test_batch .cifarpack):
#   bash scripts/gpu_session.sh 2 <seconds>
#       unpacks all six files to /tmp/cifar (MD5-checked), trains the one-seed WRN-16-1 rows concurrently until the
#       deadline (scripts/gpu_rows.py --concurrent); finished records in $OUT/runs.tar, unfinished runs'
#       checkpoints in $OUT/checkpoints.tar (extract into results/ and carry them to resume in a later call).
#
# A window of single graphed runs (no --concurrent: the path proven on a GPU), as two back-to-back calls:
# stage (carry the first three packed files), then at once rows (carry the other three; unfinished runs' checkpoints
# under results/ travel as untracked files and resume):
#   ATLIB_COMMIT=<commit> bash scripts/gpu_session.sh stage 60
#   ATLIB_COMMIT=<commit> bash scripts/gpu_session.sh rows <seconds>
#       unpacks to /tmp/cifar, trains the one-seed WRN-16-1 rows one after the other (AT, student, KD, AT+KD,
#       F-ActT) until <seconds> - 30; $OUT/runs.tar (records, metrics, weights), $OUT/checkpoints.tar.
# Every output goes to $OUT (the device tool brings it back), stamped with GPU, torch, commit and date.
set -uo pipefail
part=${1:?part 1 or 2}
budget=${2:-540}
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/packed
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export ATLIB_COMMIT=${ATLIB_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
cp .data/packed/* /tmp/packed/ 2>/dev/null
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version())"
  echo "commit $ATLIB_COMMIT date $(date -u '+%Y-%m-%d %H:%M:%S UTC')"; } > "$out/gpu-$part.txt" 2>&1
cat "$out/gpu-$part.txt"

if [ "$part" = 1 ]; then
  timeout $(( $(left) / 4 )) python -m pytest tests/test_gpu.py -q -p no:cacheprovider > "$out/1-gpu-tests.txt" 2>&1
  tail -3 "$out/1-gpu-tests.txt"
  timeout $(( $(left) * 2 / 3 )) python benchmarks/throughput.py --repeats 3 \
    --only "authors,engine graph channels_last: AT,engine graph channels_last: WRN-16-1,concurrent graph,min-l2,symmetry" \
    --json "$out/1-concurrent.json" > "$out/1-concurrent.txt" 2>&1
  cat "$out/1-concurrent.txt"
  timeout 90 python benchmarks/throughput.py --repeats 1 --images 1280 --profile 20 \
    --only "engine graph: symmetry NIN-thin-nobn,engine graph channels_last: min-l2,engine graph channels_last: AT" \
    > "$out/1-profiles.txt" 2>&1
  timeout $(( $(left) - 20 )) python benchmarks/throughput.py --repeats 1 --no-main --plan paper --concurrent 5 \
    --json "$out/1-plan-concurrent.json" > "$out/1-plan-concurrent.txt" 2>&1
  tail -30 "$out/1-plan-concurrent.txt"
elif [ "$part" = 2 ]; then
  python scripts/pack_cifar.py unpack /tmp/packed /tmp/cifar/cifar-10-batches-py > "$out/2-unpack.txt" 2>&1 \
    || { cat "$out/2-unpack.txt"; exit 1; }
  python scripts/gpu_rows.py --deadline $(( $(left) - 30 )) --data-root /tmp/cifar --results results --concurrent \
    --out "$out" 2>&1 | tee "$out/2-rows.log" | grep -v "epoch .*/200" | tail -40
elif [ "$part" = stage ]; then
  ls -l /tmp/packed
elif [ "$part" = rows ]; then
  python scripts/pack_cifar.py unpack /tmp/packed /tmp/cifar/cifar-10-batches-py > "$out/rows-unpack.txt" 2>&1 \
    || { cat "$out/rows-unpack.txt"; exit 1; }
  echo "unpacked after $(( budget - $(left) )) s"
  PYTHONUNBUFFERED=1 python scripts/gpu_rows.py --deadline $(( $(left) - 30 )) --data-root /tmp/cifar \
    --results results --out "$out" --rates results/benchmarks/h200-2026-11-26/3-channels-last.json 2>&1 \
    | tee "$out/rows.log" | grep -v "epoch .*/200" | tail -40
else
  echo "part must be 1, 2, stage or rows, got $part" >&2
  exit 2
fi
