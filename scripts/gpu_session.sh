#!/usr/bin/env bash
# The calls of a lent GPU window (the device tool: at most 64 MiB travel per call, the whole working tree included;
# no network; the machine is given back after 30 s idle, so the calls go back to back). Prepare here first:
#
#   python scripts/pack_cifar.py pack <data root>/cifar-10-batches-py .data/packed   # ~3 min, .data/ ignored
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
#       python -m atlib campaign import <files_at>   then commit results/ (docs/campaign.md).
# benchmark call (issue 5 measurements; carry nothing):
#   ATLIB_COMMIT=<commit> bash scripts/gpu_session.sh bench <seconds>
# issue 15's levers, each beside the previous best of the same work (carry nothing; about 6 minutes on an H200):
#   ATLIB_COMMIT=<commit> bash scripts/gpu_session.sh bench15 <seconds>
#       the GPU tests (float64 equalities incl. the grouped NIN), then torch.compile and Table 3's grouped networks.
# Every output goes to $OUT (the device tool brings it back), stamped with GPU, torch, commit and date.
set -uo pipefail
part=${1:?part: stage, campaign, bench or bench15}
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
  bench15)
    timeout $(( $(left) / 4 )) python -m pytest tests/test_gpu.py tests/test_grouped_nin.py -q -p no:cacheprovider \
      > "$out/gpu-tests.txt" 2>&1
    tail -3 "$out/gpu-tests.txt"
    # previous bests first (same work, same call), then the new levers
    timeout $(( $(left) - 20 )) python benchmarks/throughput.py --repeats 3 --only "$(paste -sd, <<'CASES'
authors'-style loop
engine graph channels_last: AT 16-2 -> 16-1
cohort graph channels_last: 16 x AT
engine graph channels_last: min-l2 NIN-thin-nobn
concurrent graph channels_last: 5 x min-l2
engine graph: symmetry NIN-thin-nobn
compile
nin-cohort graph
CASES
)" --json "$out/bench15.json" > "$out/bench15.txt" 2>&1
    cat "$out/bench15.txt" ;;
  *)
    echo "part must be stage, campaign, bench or bench15, got $part" >&2
    exit 2 ;;
esac
