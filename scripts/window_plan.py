"""Plan a GPU window's calls: which packed CIFAR-10 files each call carries (64 MiB per call, the working tree
included), and the commands to give the device tool.

    python scripts/window_plan.py [--packed .data/packed] [--seconds 900]

The working tree that travels is every tracked file and every untracked file git does not ignore (committed runs,
checkpoints and reports count), so the room left for data shrinks as results are committed; this prints the calls
for the tree as it is now.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

LIMIT = 64 * 2**20
MARGIN = 2**18  # bytes kept free: files written between planning and the call


def travelling_bytes(root: Path) -> int:
    """Bytes of the tree the device tool sends: tracked files and untracked files git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def plan(files: list[Path], room: int) -> list[list[Path]]:
    """Calls in order, each a list of files that fit in ``room`` bytes (first fit, largest first)."""
    calls: list[tuple[int, list[Path]]] = []
    for f in sorted(files, key=lambda f: -f.stat().st_size):
        size = f.stat().st_size
        if size > room:
            raise SystemExit(f"window_plan: {f} ({size:,} bytes) does not fit beside the tree ({room:,} bytes left)")
        for i, (used, members) in enumerate(calls):
            if used + size <= room:
                calls[i] = (used + size, members + [f])
                break
        else:
            calls.append((size, [f]))
    return [members for _, members in calls]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packed", default=".data/packed")
    parser.add_argument("--seconds", type=int, default=900, help="device time left (the tool's budget_left_s)")
    args = parser.parse_args()
    root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                               check=True).stdout.strip())
    packed = root / args.packed
    files = sorted(packed.glob("*"))
    if not any(f.suffix == ".cifarpack" for f in files):
        print(f"window_plan: no packed CIFAR-10 in {packed}; run scripts/pack_cifar.py pack first", file=sys.stderr)
        return 2
    tree = travelling_bytes(root)
    room = LIMIT - tree - MARGIN
    calls = plan(files, room)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                            text=True).stdout.strip()
    print(f"tree that travels: {tree / 2**20:.1f} MiB; room for data per call: {room / 2**20:.1f} MiB; "
          f"{len(calls)} call(s)")
    for i, members in enumerate(calls, 1):
        carry = [str(f.relative_to(root)) for f in members]
        last = i == len(calls)
        command = (f"ATLIB_COMMIT={commit} bash scripts/gpu_session.sh campaign <seconds>" if last
                   else "bash scripts/gpu_session.sh stage")
        print(f"call {i}: carry {carry}\n        command: {command}")
    print("<seconds>: the device time left after the stage calls (budget_left_s of the last reply) minus about 60 s "
          "for the transfers; at most 590 (10 minutes a call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
