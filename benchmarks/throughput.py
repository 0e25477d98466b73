"""Training throughput (images/s, batch 128 per student) of our engine against an authors'-style loop, in one process.

    python benchmarks/throughput.py [--device auto|cpu|cuda] [--images N] [--repeats 3] [--json out.json]

Every configuration trains on the same random CIFAR-shaped uint8 images: one warm-up epoch (it also captures the
CUDA graph), then ``--repeats`` timed epochs of ``--images`` images per student; the median is printed with its
ratio to the authors'-style loop. Configurations are data (``CASES``):

- ``authors``: the authors' way: PIL images through torchvision transforms (reflect-pad 4 + random crop + flip,
  ToTensor, Normalize) in a DataLoader with 4 workers, fp32, eager, and the loss read back every batch (workers are
  kept alive between epochs, which favours this baseline: the authors' loop starts them every epoch);
- ``engine``: ``atlib``'s step (device-resident data, batched augmentation), eager or captured as a CUDA graph;
- ``cohort``: K students as one grouped network (``atlib.training.cohorts``), each with its own batches and teacher
  pass, or sharing batches and one teacher pass (``shared``);
- ``concurrent``: K independent engine runs, each on its own CUDA stream, advanced one step each in turn
  (``atlib.training.concurrent``): any network and method.
- ``nin-cohort``: Table 3's runs (BN-free NIN-thin, double backpropagation) as one grouped network
  (``atlib.training.grouped_nin``), each with its own batches, method and teacher, and one SGD over all;
- ``"compile": True`` (engine and cohort cases): the student's and teacher's forward compiled by ``torch.compile``
  (Inductor; the compile time is paid in the warm-up epoch and not timed).

``--plan PROFILE [--concurrent K]`` adds one case per group shape of that profile's suite (for ``atlib plan``);
``--profile ROWS`` prints each case's costliest operators (one eager epoch under ``torch.profiler``).

Nothing is asserted: speed targets are read here, never tested. CUDA-only cases are skipped on other devices.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from atlib import objective
from atlib.data import ImageSet, train_batches
from atlib.data.cifar import CIFAR_MEAN, CIFAR_STD
from atlib.losses import at_loss, cross_entropy
from atlib.methods import method_terms
from atlib.models import build_model
from atlib.objective import build_objective
from atlib.training.cohort_steps import TeacherPass, cohort_epoch, make_cohort_step, make_grouped_nin_step
from atlib.training.concurrent import on_stream, run_streams
from atlib.training.config import RunConfig
from atlib.training.provenance import device_name
from atlib.training.devices import autocast
from atlib.training.engine import compile_models, make_optimizer, make_step, resolve_device
from atlib.training import grouped_nin
from atlib.training.grouped_wrn import pack, stack_inputs
from atlib.training.steps import StepRunner
from atlib.training.teacher_ahead import TeacherAhead

# (label, kind, options). Teacher WRN-16-2, student WRN-16-1 unless the options say otherwise.
CASES = [
    ("authors'-style loop: AT 16-2 -> 16-1", "authors", {}),
    ("engine eager: WRN-16-1", "engine", {"method": "student"}),
    ("engine eager: WRN-16-2", "engine", {"method": "student", "student": "wrn-16-2"}),
    ("engine eager: AT 16-2 -> 16-1", "engine", {"method": "at"}),
    ("engine graph: WRN-16-1", "engine", {"method": "student", "graph": True}),
    ("engine graph: WRN-16-2", "engine", {"method": "student", "student": "wrn-16-2", "graph": True}),
    ("engine graph: AT 16-2 -> 16-1", "engine", {"method": "at", "graph": True}),
    ("engine graph bf16: AT 16-2 -> 16-1", "engine", {"method": "at", "graph": True, "precision": "bf16"}),
    ("engine graph cudnn.benchmark: AT 16-2 -> 16-1", "engine", {"method": "at", "graph": True,
                                                               "cudnn_benchmark": True}),
    ("engine graph channels_last: WRN-16-1", "engine", {"method": "student", "graph": True, "channels_last": True}),
    ("engine graph channels_last: AT 16-2 -> 16-1", "engine", {"method": "at", "graph": True,
                                                             "channels_last": True}),
    ("engine graph channels_last bf16: AT 16-2 -> 16-1", "engine", {"method": "at", "graph": True,
                                                                  "channels_last": True, "precision": "bf16"}),
    ("engine graph channels_last bf16 foreach-SGD: AT", "engine", {"method": "at", "graph": True,
                                                                  "channels_last": True, "precision": "bf16",
                                                                  "fused": False}),
    ("engine graph replay only: AT 16-2 -> 16-1", "engine", {"method": "at", "graph": True, "replay_only": True}),
    ("engine graph replay only channels_last: AT", "engine", {"method": "at", "graph": True, "replay_only": True,
                                                             "channels_last": True}),
    ("concurrent eager: 2 x AT", "concurrent", {"method": "at", "k": 2}),
    ("concurrent graph channels_last: 2 x AT", "concurrent", {"method": "at", "k": 2, "graph": True,
                                                           "channels_last": True}),
    ("concurrent graph channels_last: 4 x AT", "concurrent", {"method": "at", "k": 4, "graph": True,
                                                           "channels_last": True}),
    ("concurrent graph channels_last: 8 x AT", "concurrent", {"method": "at", "k": 8, "graph": True,
                                                           "channels_last": True}),
    ("concurrent graph channels_last: 4 x WRN-16-2", "concurrent", {"method": "student", "student": "wrn-16-2",
                                                                 "k": 4, "graph": True, "channels_last": True}),
    ("engine graph channels_last: min-l2 NIN-thin-nobn", "engine", {"method": "min-l2", "student": "nin-thin-nobn",
                                                                   "graph": True, "channels_last": True}),
    ("concurrent graph channels_last: 5 x min-l2", "concurrent", {"method": "min-l2", "student": "nin-thin-nobn",
                                                               "k": 5, "graph": True, "channels_last": True}),
    ("engine graph channels_last cudnn.benchmark: min-l2", "engine",
     {"method": "min-l2", "student": "nin-thin-nobn", "graph": True, "channels_last": True, "cudnn_benchmark": True}),
    ("engine graph: symmetry NIN-thin-nobn", "engine", {"method": "symmetry", "student": "nin-thin-nobn",
                                                       "graph": True}),
    ("engine graph cudnn.benchmark: symmetry", "engine", {"method": "symmetry", "student": "nin-thin-nobn",
                                                         "graph": True, "cudnn_benchmark": True}),
    ("engine graph two-pass: symmetry NIN-thin-nobn", "engine", {"method": "symmetry", "student": "nin-thin-nobn",
                                                                "graph": True, "mirror_one_pass": False}),
    ("cohort eager: 4 x AT", "cohort", {"methods": ["at"] * 4}),
    ("cohort graph: 8 x AT", "cohort", {"methods": ["at"] * 8, "graph": True}),
    ("cohort graph: 16 x AT", "cohort", {"methods": ["at"] * 16, "graph": True}),
    ("cohort graph channels_last: 16 x AT", "cohort", {"methods": ["at"] * 16, "graph": True, "channels_last": True}),
    ("cohort graph channels_last bf16: 16 x AT", "cohort", {"methods": ["at"] * 16, "graph": True,
                                                          "channels_last": True, "precision": "bf16"}),
    ("cohort graph: 16 x WRN-16-1", "cohort", {"methods": ["student"] * 16, "graph": True}),
    ("cohort graph: 5 x WRN-16-2", "cohort", {"methods": ["student"] * 5, "student": "wrn-16-2", "graph": True}),
    ("cohort graph shared: student,AT", "cohort", {"methods": ["student", "at"], "graph": True, "shared": True}),
    ("cohort graph shared: student,AT,KD,AT+KD", "cohort",
     {"methods": ["student", "at", "kd", "at+kd"], "graph": True, "shared": True}),
    ("cohort graph shared: 16 x AT", "cohort", {"methods": ["at"] * 16, "graph": True, "shared": True}),
    # torch.compile (issue 15), beside the previous best of the same work above
    ("engine compile: AT 16-2 -> 16-1", "engine", {"method": "at", "compile": True}),
    ("engine graph compile channels_last: AT", "engine", {"method": "at", "graph": True, "channels_last": True,
                                                         "compile": True}),
    ("cohort graph compile channels_last: 16 x AT", "cohort", {"methods": ["at"] * 16, "graph": True,
                                                              "channels_last": True, "compile": True}),
    # Table 3 as grouped networks (issue 15), beside "engine graph ...: min-l2 / symmetry" and "5 x min-l2" above
    ("nin-cohort graph: 5 x min-l2", "nin-cohort", {"methods": ["min-l2"] * 5, "graph": True}),
    ("nin-cohort graph: 10 x min-l2", "nin-cohort", {"methods": ["min-l2"] * 10, "graph": True}),
    ("nin-cohort graph: 5 x symmetry", "nin-cohort", {"methods": ["symmetry"] * 5, "graph": True}),
    ("nin-cohort graph: 5 x grad-at", "nin-cohort", {"methods": ["grad-at"] * 5, "graph": True}),
    ("nin-cohort graph: Table 3 x 1 seed", "nin-cohort", {"methods": ["student", "min-l2", "grad-at", "kd",
                                                                      "symmetry", "at"], "graph": True}),
    ("nin-cohort graph channels_last: 5 x min-l2", "nin-cohort", {"methods": ["min-l2"] * 5, "graph": True,
                                                                  "channels_last": True}),
    ("nin-cohort graph cudnn.benchmark: 5 x min-l2", "nin-cohort", {"methods": ["min-l2"] * 5, "graph": True,
                                                                    "cudnn_benchmark": True}),
    ("nin-cohort eager: 3 x min-l2", "nin-cohort", {"methods": ["min-l2"] * 3}),
    ("engine eager: min-l2 NIN-thin-nobn", "engine", {"method": "min-l2", "student": "nin-thin-nobn"}),
]
# Table 3's teachers (grids.TABLE3_ROWS): activation AT learns from the NIN whose groups end before their ReLU
NIN_TEACHERS = {"grad-at": "nin-wide-nobn", "kd": "nin-wide-nobn", "at": "nin-wide-norelu"}
TEACHER = "wrn-16-2"
STUDENT = "wrn-16-1"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _frozen_teacher(device, arch=TEACHER):
    teacher = build_model(arch).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def authors_case(data: ImageSet, device, options):
    """One epoch function of an authors'-style training loop (PIL + torchvision transforms + DataLoader)."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    class Arrays(Dataset):
        def __init__(self, images, labels, transform):
            self.images, self.labels, self.transform = images.permute(0, 2, 3, 1).numpy(), labels.numpy(), transform

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])

    transform = T.Compose([T.RandomCrop(32, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip(),
                           T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    loader = DataLoader(Arrays(data.images, data.labels, transform), batch_size=128, shuffle=True, num_workers=4,
                        pin_memory=device.type == "cuda", persistent_workers=True)
    torch.manual_seed(0)
    student, teacher = build_model(STUDENT).to(device).train(), _frozen_teacher(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def epoch():
        total = 0.0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits, groups = student(x)
            with torch.no_grad():
                _, t_groups = teacher(x)
            loss = cross_entropy(logits, y) + at_loss(groups, t_groups, beta=1000.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()  # the authors' meters read the loss every batch
        return total

    return epoch, 1


def _engine_run(data: ImageSet, device, options, seed: int = 0):
    """One run of the engine's step: ``(runner, batches)`` where ``batches()`` draws one epoch's batches."""
    method = options["method"]
    student_arch = options.get("student", STUDENT)
    terms = method_terms(method)
    needs_teacher = RunConfig(student=student_arch, terms=terms).needs_teacher
    teacher_arch = options.get("teacher", TEACHER) if needs_teacher else None
    config = RunConfig(student=student_arch, method=method, terms=terms, precision=options.get("precision", "fp32"),
                       teacher="benchmark" if teacher_arch else None, teacher_arch=teacher_arch, epochs=1)
    torch.manual_seed(seed)
    fmt = torch.channels_last if options.get("channels_last") else torch.contiguous_format
    student = build_model(student_arch).to(device, memory_format=fmt).train()
    teacher = _frozen_teacher(device, teacher_arch).to(memory_format=fmt) if teacher_arch else None
    objective = build_objective(config.terms, student, teacher).to(device)
    optimizer = make_optimizer(list(student.parameters()) + list(objective.parameters()), config, device,
                               options.get("fused"))
    if options.get("compile"):
        compile_models(objective, student, teacher)  # the engine's --compile
    if options.get("teacher_ahead") and teacher is not None:
        teacher = TeacherAhead(teacher, lambda: autocast(device, config.precision))  # the engine's teacher_ahead
    runner = StepRunner(make_step(student, teacher, objective, optimizer, config, device), device,
                        graph=options.get("graph", False), log=print)
    generator = torch.Generator().manual_seed(seed)

    def batches():
        drawn = train_batches(data, 128, generator, device)
        if options.get("replay_only"):
            drawn = [next(iter(drawn))] * (len(data) // 128)
        drawn = [(x.contiguous(memory_format=fmt), y) for x, y in drawn]
        return teacher.batches(drawn) if isinstance(teacher, TeacherAhead) else drawn

    return runner, batches


def _compile(*models) -> None:
    """Compile the models' forward in place (``nn.Module.compile``, as ``engine.compile_models``)."""
    for model in models:
        if model is not None:
            model.compile()


def _check_captured(runner, options):
    if options.get("graph") and not runner.graph:
        raise RuntimeError("graph capture failed")


def engine_case(data: ImageSet, device, options):
    runner, batches = _engine_run(data, device, options)

    def epoch():  # the engine's epoch without its read-back of the means (random data may diverge: no matter)
        runner.reset()
        for x, y in batches():
            runner(x, y)
        _check_captured(runner, options)

    return epoch, 1


def concurrent_case(data: ImageSet, device, options):
    """K independent runs, each on its own CUDA stream, advanced one step each in turn (``training.concurrent``)."""
    k = options["k"]
    runs = [_engine_run(data, device, options, seed) for seed in range(k)]
    streams = run_streams(device, k)

    def epoch():
        epochs = []
        for (runner, batches), stream in zip(runs, streams):
            with on_stream(stream):
                runner.reset()
                epochs.append(batches())
        for step in range(len(epochs[0])):
            for (runner, _), stream, steps in zip(runs, streams, epochs):
                with on_stream(stream):
                    runner(*steps[step])
        for runner, _ in runs:
            _check_captured(runner, options)

    return epoch, k


def cohort_case(data: ImageSet, device, options):
    methods = options["methods"]
    k, shared = len(methods), options.get("shared", False)
    students = []
    for i in range(k):
        torch.manual_seed(i)
        students.append(build_model(options.get("student", STUDENT)))
    fmt = torch.channels_last if options.get("channels_last") else torch.contiguous_format
    cohort = pack(students).to(device, memory_format=fmt).train()
    teacher = _frozen_teacher(device, options.get("teacher") or TEACHER).to(memory_format=fmt)
    teachers = [None if m == "student" else teacher for m in methods]
    teacher_pass = TeacherPass(teachers, [None if t is None else "teacher" for t in teachers], shared)
    optimizer = make_optimizer(cohort.parameters(), RunConfig(student=STUDENT), device, options.get("fused"))
    if options.get("compile"):
        _compile(cohort, teacher)
    state = {"epoch": 0, "active": None}
    body = make_cohort_step(cohort, teacher_pass, [method_terms(m) for m in methods], optimizer,
                            options.get("precision", "fp32"), device, state)
    runner = StepRunner(body, device, graph=options.get("graph", False), log=print)
    generators = [torch.Generator().manual_seed(i) for i in range(1 if shared else k)]

    def epoch():
        streams = [((x.contiguous(memory_format=fmt), y) for x, y in train_batches(data, 128, g, device))
                   for g in generators]
        cohort_epoch(runner, streams, k)
        if options.get("graph") and not runner.graph:
            raise RuntimeError("graph capture failed")

    return epoch, k


def nin_cohort_case(data: ImageSet, device, options):
    """K Table 3 runs (NIN-thin-nobn students, their methods and teachers) as one grouped network, each with its
    own batches; one step = the K objectives (double backpropagation) and one SGD over all parameters."""
    methods = options["methods"]
    k = len(methods)
    students = []
    for i in range(k):
        torch.manual_seed(i)
        students.append(build_model("nin-thin-nobn"))
    fmt = torch.channels_last if options.get("channels_last") else torch.contiguous_format
    grouped = grouped_nin.pack(students).to(device, memory_format=fmt).train()
    frozen = {arch: _frozen_teacher(device, arch).to(memory_format=fmt) for arch in set(NIN_TEACHERS.values())}
    teachers = [frozen[NIN_TEACHERS[m]] if m in NIN_TEACHERS else None for m in methods]
    objectives = [build_objective(method_terms(m), s, t) for m, s, t in zip(methods, students, teachers)]
    config = RunConfig(student="nin-thin-nobn", lr=0.02, weight_decay=0.0)  # Table 3's protocol (grids.PROTOCOLS)
    optimizer = make_optimizer(grouped.parameters(), config, device, options.get("fused"))
    body = make_grouped_nin_step(grouped, objectives, teachers, optimizer, "fp32", device, {"epoch": 0})
    runner = StepRunner(body, device, graph=options.get("graph", False), log=print)
    generators = [torch.Generator().manual_seed(i) for i in range(k)]

    def epoch():
        runner.reset()
        for batch in zip(*[train_batches(data, 128, g, device, flip_only=True) for g in generators]):
            x = stack_inputs([xb for xb, _ in batch]).contiguous(memory_format=fmt)
            runner(x, torch.stack([yb for _, yb in batch], 1))
        _check_captured(runner, options)

    return epoch, k


BUILDERS = {"authors": authors_case, "engine": engine_case, "cohort": cohort_case,
            "concurrent": concurrent_case, "nin-cohort": nin_cohort_case}


def plan_cases(profile: str, share_batches: bool, concurrent: int = 1, channels_last: bool = True) -> list:
    """One case per distinct group shape that ``run_cells`` trains for ``profile`` on a GPU (``atlib.paper.plan``), with
    the engine's GPU default of channels-last activations."""
    from atlib.paper.settings import settings_from_profile
    from atlib.paper.plan import plan_groups, shape_key, shape_label

    settings = settings_from_profile(profile, cohort=16, share_batches=share_batches, concurrent=concurrent,
                                     device="cpu")
    shapes = {}
    for row in plan_groups(settings):
        shapes.setdefault(shape_key(row["shape"]), row["shape"])
    cases = []
    for shape in shapes.values():
        common = {"student": shape["student"], "graph": True, "precision": shape["precision"], "shape": shape,
                  "channels_last": channels_last}
        if shape["teacher"]:
            common["teacher"] = shape["teacher"]
        if shape["k"] == 1:
            cases.append((f"plan {shape_label(shape)}", "engine", {**common, "method": shape["methods"][0]}))
        elif shape.get("concurrent"):
            cases.append((f"plan {shape_label(shape)}", "concurrent", {**common, "method": shape["methods"][0],
                                                                       "k": shape["k"]}))
        else:
            cases.append((f"plan {shape_label(shape)}", "cohort", {**common, "methods": shape["methods"],
                                                                   "shared": shape["shared"]}))
    return cases


def measure(kind, options, data, device, repeats) -> float:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    saved, saved_mirror = torch.backends.cudnn.benchmark, objective.ONE_PASS_MIRROR_DEVICES
    torch.backends.cudnn.benchmark = options.get("cudnn_benchmark", saved)
    if "mirror_one_pass" in options:  # symmetry norm: both input gradients from one double-width pass, or two
        objective.ONE_PASS_MIRROR_DEVICES = (device.type,) if options["mirror_one_pass"] else ()
    try:
        epoch, students = BUILDERS[kind](data, device, options)
        epoch()  # warm-up (and graph capture)
        rates = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            epoch()
            _sync(device)
            rates.append(students * len(data) / (time.perf_counter() - t0))
        return statistics.median(rates)
    finally:
        torch.backends.cudnn.benchmark = saved
        objective.ONE_PASS_MIRROR_DEVICES = saved_mirror


def profile_case(kind, options, data, device, rows: int) -> str:
    """The ``rows`` costliest operators (device time on a GPU, CPU time elsewhere) of one epoch of the case run
    eagerly (kernel durations are those of the graph; a replayed graph hides its kernels from the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    epoch, _ = BUILDERS[kind](data, device, {**options, "graph": False})
    epoch()
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        epoch()
        _sync(device)
    return prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                     row_limit=rows, max_name_column_width=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=None, help="images per student per timed epoch (default: "
                        "1280 on CPU, 6400 on GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None,
                        help="run only cases whose label contains one of these comma-separated texts")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--plan", default=None, metavar="PROFILE",
                        help="also measure every group shape this profile's suite trains on a GPU (for atlib plan)")
    parser.add_argument("--plan-images", type=int, default=1280, help="images per student per timed epoch in the "
                        "plan cases (default 1280)")
    parser.add_argument("--share-batches", action="store_true", help="plan cases: cohorts share batches")
    parser.add_argument("--concurrent", type=int, default=1, help="plan cases: single runs of one shape trained at "
                        "once (Settings.concurrent)")
    parser.add_argument("--nchw", action="store_true", help="plan cases: NCHW activations (default channels-last, "
                        "as the engine on a GPU)")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="after each case, profile one eager epoch of it and print the ROWS costliest kernels")
    parser.add_argument("--no-main", action="store_true", help="skip the main cases (plan cases only)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    n = args.images or (6_400 if device.type == "cuda" else 1_280)
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.randint(0, 10, (n,), generator=g))
    header = {"commit": os.environ.get("ATLIB_COMMIT", "unknown"), "device": str(device),
              "device_name": device_name(device), "torch": torch.__version__,
              "python": platform.python_version(), "cpu_threads": torch.get_num_threads(), "images": n,
              "repeats": args.repeats, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    print(f"# atlib throughput vs an authors'-style loop, batch 128 per student, {n} random images per student per "
          f"timed epoch, median of {args.repeats}")
    print("# " + ", ".join(f"{k} {v}" for k, v in header.items()))
    print(f"{'configuration':<44} {'images/s':>12} {'x authors':>10}", flush=True)
    results, baseline = [], None
    cases = [] if args.no_main else [(label, kind, options, data) for label, kind, options in CASES]
    if args.plan:
        small = ImageSet(data.images[:args.plan_images], data.labels[:args.plan_images])
        cases += [(label, kind, options, small) for label, kind, options in
                  plan_cases(args.plan, args.share_batches, args.concurrent, not args.nchw)]
    for label, kind, options, images in cases:
        if args.only and not any(part in label for part in args.only.split(",")):
            continue
        if options.get("graph") and device.type != "cuda":
            continue
        try:
            ips = measure(kind, options, images, device, args.repeats)
        except Exception as e:  # noqa: BLE001 - report and go on to the next configuration
            print(f"{label:<44} failed: {' '.join(str(e).split())[:200]}", flush=True)
            results.append({"label": label, "kind": kind, "options": options, "error": str(e)[:500]})
            continue
        if kind == "authors":
            baseline = ips
        ratio = f"{ips / baseline:>9.1f}x" if baseline else f"{'':>10}"
        print(f"{label:<44} {ips:>12,.0f} {ratio}", flush=True)
        if args.profile:
            print(profile_case(kind, options, images, device, args.profile), flush=True)
        results.append({"label": label, "kind": kind, "options": options, "images_per_s": ips,
                        "ratio_to_authors": ips / baseline if baseline else None,
                        **({"shape": options["shape"]} if "shape" in options else {})})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**header, "results": results}, f, indent=1)


if __name__ == "__main__":
    np.random.seed(0)
    main()
