"""Training throughput of the engine (images/s) at batch 128 on the current device.

    python benchmarks/throughput.py [--device auto|cpu|cuda] [--images 2560] [--precision fp32|bf16]

Measures ``atlib.engine.train_epoch`` (device-side augmentation, objective, SGD step) on random CIFAR-shaped uint8
images, after one warm-up epoch, for: WRN-16-1 alone, WRN-16-2 alone, and AT WRN-16-2 -> WRN-16-1.
Prints one line per configuration; nothing is asserted (speed targets are read, not tested).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from atlib.config import RunConfig
from atlib.data import ImageSet, train_batches
from atlib.engine import _device_name, resolve_device, train_epoch
from atlib.methods import method_terms
from atlib.models import build_model
from atlib.objective import build_objective

CASES = [
    ("WRN-16-1", "wrn-16-1", None, "student"),
    ("WRN-16-2", "wrn-16-2", None, "student"),
    ("AT WRN-16-2 -> WRN-16-1", "wrn-16-1", "wrn-16-2", "at"),
]


def measure(student_arch, teacher_arch, method, data, device, precision, repeats):
    config = RunConfig(student=student_arch, method=method, terms=method_terms(method), precision=precision,
                       teacher="benchmark" if teacher_arch else None, teacher_arch=teacher_arch, epochs=1)
    torch.manual_seed(0)
    student = build_model(student_arch).to(device)
    teacher = None
    if teacher_arch:
        teacher = build_model(teacher_arch).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    objective = build_objective(config.terms, student, teacher).to(device)
    optimizer = torch.optim.SGD(list(student.parameters()) + list(objective.parameters()), lr=0.1, momentum=0.9,
                                weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    student.train()

    def epoch():
        train_epoch(student, teacher, objective, optimizer, train_batches(data, 128, generator, device), config,
                    device)
    epoch()  # warm-up
    best = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        epoch()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, len(data) / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=None, help="images per timed epoch (default: 1280 on CPU, "
                        "25600 on GPU)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    device = resolve_device(args.device)
    n = args.images or (25_600 if device.type == "cuda" else 1_280)
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.randint(0, 10, (n,), generator=g))
    print(f"# atlib engine throughput, batch 128, {args.precision}, {n} images per timed epoch")
    print(f"# device {device} ({_device_name(device)}), torch {torch.__version__}, python {platform.python_version()}, "
          f"{torch.get_num_threads()} CPU threads")
    for label, student, teacher, method in CASES:
        ips = measure(student, teacher, method, data, device, args.precision, args.repeats)
        print(f"{label:<26} {ips:>10,.0f} images/s")


if __name__ == "__main__":
    main()
