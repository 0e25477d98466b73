#!/usr/bin/env bash
# The calls of a lent GPU window (the device tool: at most 64 MiB travel per call, the whole working tree included;
# no network; the machine is given back after 30 s idle, so the calls go back to back). Prepare here first:
#
#   python scripts/pack_cifar.py pack ../shared/datasets/cifar-10-batches-py .data/packed   # ~3 min, .data/ ignored
#   python scripts/window_plan.py                   # which packed files each call carries, and the commands
#
# stage calls (carry the packed files the plan gives that call):
#   bash scripts/gpu_session.sh stage
#       keeps the carried parts of CIFAR-10 in /tmp/packed on the device machine.
# the last call, at once (carry the remaining packed files):
#   ATLIB_COMMIT=<commit> bash scripts/gpu_session.sh campaign <seconds>
#       unpacks CIFAR-10 to /tmp/cifar (MD5-checked), then `python -m atlib campaign --profile one-seed` trains the
#       suite's next groups in value order until <seconds> - 60 (stopping at an epoch boundary), and packs what it
#       changed into $OUT (<profile>-pack.tar.<i>-of-<n>, 15 MiB parts). Back here:
#       python -m atlib campaign import <files_at>   then commit results/ (see the README, "The campaign").
# benchmark call (issue 5/15 measurements; carry nothing):
#   ATLIB_COMMIT=<commit> bash scripts/gpu_session.sh bench <seconds>
# Every output goes to $OUT (the device tool brings it back), stamped with GPU, torch, commit and date.
set -uo pipefail
part=${1:?part: stage, campaign or bench}
budget=${2:-540}
profile=${PROFILE:-one-seed}
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/packed
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export ATLIB_COMMIT=${ATLIB_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
cp .data/packed/* /tmp/packed/ 2>/dev/null
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c "import torch as t, platform as p; print(t.__version__, t.version.cuda, p.python_version())"
  echo "commit $ATLIB_COMMIT date $(date -u '+%Y-%m-%d %H:%M:%S UTC')"; } > "$out/gpu-$part.txt" 2>&1
cat "$out/gpu-$part.txt"

case "$part" in
  stage)
    ls -l /tmp/packed ;;
  campaign)
    python scripts/pack_cifar.py unpack /tmp/packed /tmp/cifar/cifar-10-batches-py > "$out/unpack.txt" 2>&1 \
      || { cat "$out/unpack.txt"; ls -l /tmp/packed; exit 1; }
    echo "unpacked after $(( budget - $(left) )) s; training for $(( $(left) - 60 )) s"
    python -m atlib campaign --profile "$profile" --deadline $(( $(left) - 60 )) --data-root /tmp/cifar \
      --out "$out" 2>&1 | tee "$out/campaign.log" | grep -v "^  " | tail -60
    python -m atlib campaign status --profile "$profile" > "$out/status.txt" 2>&1 ;;
  bench)
    timeout $(( $(left) / 4 )) python -m pytest tests/test_gpu.py -q -p no:cacheprovider > "$out/gpu-tests.txt" 2>&1
    tail -3 "$out/gpu-tests.txt"
    timeout $(( $(left) - 20 )) python benchmarks/throughput.py --repeats 3 \
      --only "authors,engine graph channels_last: AT,engine graph channels_last: WRN-16-1,concurrent graph,min-l2,symmetry" \
      --json "$out/bench.json" > "$out/bench.txt" 2>&1
    cat "$out/bench.txt" ;;
  *)
    echo "part must be stage, campaign or bench, got $part" >&2
    exit 2 ;;
esac
