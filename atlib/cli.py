"""Command line: ``python -m atlib train|runs|reproduce|plan|campaign|work ...`` (docs/cli.md).

Every user error (unknown architecture or method, missing teacher run, missing data, bad option value) exits with
code 2 and one line naming the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .data import DataError
from .paper.grids import TABLES
from .paper.pipeline import PipelineError
from .training.command import add_run_arguments, config_from_args
from .training.config import ConfigError
from .paths import DEFAULT_RESULTS
from .training.engine import TrainingError, train
from .training.store import RunStore, StoreError

USER_ERRORS = (ConfigError, DataError, StoreError, TrainingError, ValueError)


class _StdoutHandler(logging.Handler):
    """The library's log lines on whatever ``sys.stdout`` is at the time (the command's output)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stdout, flush=True)


def _log_to_stdout() -> None:
    root = logging.getLogger("atlib")
    if not any(isinstance(h, _StdoutHandler) for h in root.handlers):
        root.addHandler(_StdoutHandler())
    root.setLevel(logging.INFO)


def _overrides(pairs: list[str] | None) -> dict:
    """``["seeds=[0,1]", "epochs=3"]`` -> ``{"seeds": [0, 1], "epochs": 3}`` (values read as YAML)."""
    import yaml
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key.strip()}: cannot read the value {value!r}") from None
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atlib", description="Attention transfer (Zagoruyko & Komodakis, ICLR 2017) replication")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one run (or return its record if finished; resume if interrupted)")
    add_run_arguments(t)
    t.add_argument("--results", default=DEFAULT_RESULTS, help=f"results directory (default ./{DEFAULT_RESULTS})")
    t.add_argument("--restart", action="store_true", help="discard this run's checkpoint and records, train anew")
    t.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    t.add_argument("--compile", action="store_true", help="experimental on a GPU (never measured there): compile "
                   "the student's and teacher's forward with torch.compile (not for input-gradient terms; 1.1-1.4x on "
                   "a 2-core CPU, benchmarks/cpu_campaign.py)")
    t.add_argument("--teacher-ahead", action="store_true", help="on a CPU: the teacher's forward for the next batch "
                   "on a second thread, beside the student's step (same numbers; see docs/performance.md)")
    t.add_argument("--no-graph", dest="graph", action="store_false", default=None,
                   help="on a GPU, run the step eagerly instead of capturing it as a CUDA graph")

    rp = sub.add_parser("reproduce", help="run the notebook sequence with papermill for a profile")
    rp.add_argument("--profile", default="one-seed", help="one-seed (default: on a CPU, the tables from the stored "
                    "runs; on a GPU, trains what is missing), paper, cpu-demo (attention transfer with little data on a "
                    "CPU, ~10 min from scratch with AVX-512, ~18.5 predicted without), smoke (the 2-epoch "
                    "end-to-end test), or a YAML file")
    rp.add_argument("--only", nargs="+", help="run only the notebooks whose names start with these, e.g. 03 07")
    rp.add_argument("--device", help="override the profile's device")
    rp.add_argument("--data-root", help="override the profile's data root")
    rp.add_argument("--results", dest="results_dir", help="override the profile's results directory")
    rp.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", help="override profile parameters, e.g. seeds=[0,1] "
                    "epochs=3 (values in YAML; checked against the notebooks' parameters)")
    rp.add_argument("--train", choices=["auto", "yes", "no"], help="override the profile's train setting: yes "
                    "trains missing runs even on a CPU (200 epochs each under the authors' protocol)")

    w = sub.add_parser("work", help="train a profile's runs together with other processes (one per GPU or machine) "
                       "until all are finished")
    w.add_argument("--profile", default="one-seed", help="one-seed (default), paper, cpu-demo, smoke, or a YAML file")
    w.add_argument("--results", dest="results_dir", help="override the profile's results directory (shared by all)")
    w.add_argument("--device", help="override the profile's device, e.g. cuda:1")
    w.add_argument("--data-root", help="override the profile's data root")
    w.add_argument("--name", help="this worker's name in claims (default host:pid)")
    w.add_argument("--stale-after", type=float, default=600.0, help="seconds without a heartbeat after which another "
                   "worker's claim is taken over (default 600)")
    w.add_argument("--heartbeat", type=float, default=30.0, help="seconds between this worker's heartbeats (default 30)")
    w.add_argument("--poll", type=float, default=5.0, help="seconds to wait when every run left is held by others")
    w.add_argument("--train", choices=["auto", "yes"], help="override the profile's train setting: yes trains even "
                   "the authors' 200-epoch runs on a CPU")

    pl = sub.add_parser("plan", help="list the groups a profile's CIFAR-10 suite trains and estimate GPU time")
    pl.add_argument("--profile", default="paper", help="smoke, one-seed, paper (default), or a YAML file")
    pl.add_argument("--rates", nargs="+", help="benchmark JSON files with measured throughput per group shape "
                    "(benchmarks/throughput.py --plan PROFILE --json FILE); later files win")
    pl.add_argument("--cohort", type=int, default=16, help="largest cohort (default 16, as on a GPU)")
    pl.add_argument("--share-batches", action="store_true", help="cohorts of one seed share batches and teacher "
                    "passes")
    pl.add_argument("--concurrent", type=int, default=1, help="experimental (never measured on a GPU): single runs "
                    "of one shape trained at once on a GPU, each on its own CUDA stream (default 1)")
    pl.add_argument("--tables", nargs="+", help=f"tables to plan (default all CIFAR-10 ones: {', '.join(TABLES)})")

    c = sub.add_parser("campaign", help="train a profile's CIFAR-10 suite in value order until a deadline "
                       "(in this process, or in the background: start / status / stop / commit); pack / import its "
                       "runs",
                       description="campaign --profile P --deadline SECONDS [--out DIR]: train the next groups until "
                       "the deadline (stops at an epoch boundary, every unfinished run resumable; with --out, pack "
                       "the runs there). campaign pack --profile P --out DIR: pack the profile's runs. campaign "
                       "import PATH...: import a pack (its parts, or a directory holding them). campaign status "
                       "--profile P: where every run of the suite stands (epoch k/N, test error, images/s, time left). campaign start "
                       "--profile P --device cpu --deadline SECONDS|HH:MM: train in the background (detached lanes, "
                       "nice 19; log beside the store). campaign stop: stop it within 10 s, keeping the last whole "
                       "epoch. campaign commit [--stop]: commit the changed run directories (git).")
    c.add_argument("action", nargs="?", default="run",
                   choices=["run", "pack", "import", "status", "start", "stop", "commit", "lane"])
    c.add_argument("paths", nargs="*", help="import: the pack's parts, or a directory holding them")
    c.add_argument("--profile", help="one-seed (default), paper, or a YAML file; import: the profile the pack "
                   "must hold (default: the one it holds)")
    c.add_argument("--deadline", help="run, start: seconds from now by which training stops (start: or an end "
                   "time, HH:MM or YYYY-MM-DDTHH:MM)")
    c.add_argument("--lanes", type=int, default=2, help="start: processes training side by side (default 2)")
    c.add_argument("--threads", type=int, default=1, help="start: intra-op threads per lane (default 1)")
    c.add_argument("--nice", type=int, default=19, help="start: scheduling priority of the lanes (default 19)")
    c.add_argument("--compile", action="store_true", help="start: compile the forwards with torch.compile (the "
                   "execution path, not part of a run's identity)")
    c.add_argument("--teacher-ahead", action=argparse.BooleanOptionalAction, default=None, help="start: each run "
                   "with a teacher computes the teacher's forward for the next batch on a second thread (the "
                   "execution path, same numbers; default: on for CPU lanes, measured 1.16x for AT beside a student "
                   "lane)")
    c.add_argument("--stop", action="store_true", help="commit: stop the campaign first")
    c.add_argument("--at-epoch-end", action="store_true", help="stop, commit --stop: let each lane finish the epoch "
                   "in flight (and checkpoint it) instead of dropping it; waits for that (minutes on a CPU)")
    c.add_argument("--until", type=float, help=argparse.SUPPRESS)   # lane: the end as time.time()
    c.add_argument("--name", help=argparse.SUPPRESS)                # lane: its name in claims and the log
    c.add_argument("--out", help="run: pack the runs into this directory when done; pack: where to write")
    c.add_argument("--data-root", help="override the profile's data root")
    c.add_argument("--device", help="override the profile's device")
    c.add_argument("--results", dest="results_dir", help="override the profile's results directory")

    r = sub.add_parser("runs", help="list stored runs with their status and final test error")
    r.add_argument("--results", default=DEFAULT_RESULTS)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.teacher is None and config.needs_teacher:
        raise ConfigError(f"method {args.method!r} needs --teacher")
    record = train(config, results=args.results, progress=not args.quiet, restart=args.restart,
                   log=None if args.quiet else print, graph=args.graph, compile=args.compile,
                   teacher_ahead=args.teacher_ahead)
    print(f"{record['run_id']}\ttest error {record['test_error']:.2f}%")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    runs = RunStore(args.results).list_runs()
    if not runs:
        print(f"no runs in {args.results}")
        return 0
    width = max(len(r["run_id"]) for r in runs)
    print(f"{'run id':<{width}}  {'status':<11}  {'epochs':>6}  test error")
    for r in runs:
        err = "-" if r["test_error"] is None else f"{r['test_error']:.2f}%"
        print(f"{r['run_id']:<{width}}  {r['status']:<11}  {r['epochs']:>6}  {err}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .paper.pipeline import run_sequence
    train = {"auto": "auto", "yes": True, "no": False, None: None}[args.train]
    overrides = {**_overrides(args.set), **{k: v for k, v in (("device", args.device), ("data_root", args.data_root),
                                                               ("results_dir", args.results_dir), ("train", train))
                                             if v is not None}}
    run_sequence(args.profile, overrides=overrides, only=args.only)
    return 0


def cmd_work(args: argparse.Namespace) -> int:
    from .paper.settings import settings_from_profile
    from .paper.workers import work
    for flag, value in (("--stale-after", args.stale_after), ("--heartbeat", args.heartbeat), ("--poll", args.poll)):
        if not value > 0:
            raise ConfigError(f"{flag} must be a positive number of seconds, got {value}")
    if not args.heartbeat < args.stale_after:
        raise ConfigError(f"--heartbeat ({args.heartbeat}) must be shorter than --stale-after ({args.stale_after})")
    overrides = {k: v for k, v in (("results_dir", args.results_dir), ("device", args.device),
                                   ("data_root", args.data_root), ("train", {"yes": True}.get(args.train, args.train)))
                 if v is not None}
    settings = settings_from_profile(args.profile, **overrides)
    work(settings, name=args.name, stale_after=args.stale_after, heartbeat=args.heartbeat, poll=args.poll)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .paper.plan import estimate, format_plan, load_rates, plan_groups
    from .paper.settings import settings_from_profile
    for name in args.tables or []:
        if name not in TABLES:
            raise ConfigError(f"unknown table {name!r}; expected some of {', '.join(TABLES)}")
    if args.cohort < 1:
        raise ConfigError(f"--cohort must be at least 1, got {args.cohort}")
    if args.concurrent < 1:
        raise ConfigError(f"--concurrent must be at least 1, got {args.concurrent}")
    settings = settings_from_profile(args.profile, cohort=args.cohort, share_batches=args.share_batches,
                                     concurrent=args.concurrent)
    rows = plan_groups(settings, args.tables)
    if args.rates:
        rates = {}
        for path in args.rates:
            if not Path(path).is_file():
                raise ConfigError(f"--rates file {path} does not exist")
            rates.update(load_rates(path))
        rows = estimate(rows, rates)
    print(format_plan(rows))
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    from .paper import campaign, packs
    from .paper.settings import settings_from_profile
    if args.action != "import" and args.paths:
        raise ConfigError(f"campaign {args.action} takes no paths, got {' '.join(args.paths)}")
    if args.action == "import":
        if not args.paths:
            raise ConfigError("campaign import needs the pack's parts or a directory holding them")
        results = args.results_dir or DEFAULT_RESULTS
        name, imported = packs.import_pack(args.paths, results, args.profile)
        print(packs.describe(imported, Path(results) / name))
        return 0
    overrides = {k: v for k, v in (("data_root", args.data_root), ("device", args.device),
                                   ("results_dir", args.results_dir)) if v is not None}
    settings = settings_from_profile(args.profile or "one-seed", **overrides)
    settings.check_paper_suite(f"campaign {args.action}")
    if args.action == "pack":
        if not args.out:
            raise ConfigError("campaign pack needs --out DIR")
        _print_pack(packs.pack(settings, args.out))
        return 0
    total = len(campaign.jobs(settings))
    if args.action in ("start", "stop", "commit", "lane", "status"):
        return _background(args, settings, total)
    deadline = _float(args.deadline, "--deadline")
    if deadline is None or not deadline > 0:
        raise ConfigError(f"campaign needs --deadline SECONDS > 0, got {args.deadline}")
    if not campaign.groups(settings):
        print(f"campaign: nothing left to train: all {total} runs of profile {settings.profile!r} are finished "
              f"in {settings.store_root}")
        return 0
    started = time.time()
    try:
        outcome = campaign.run(settings, deadline)
        print(campaign.describe(outcome, total))
    finally:
        if args.out:  # what this call changed (the rest is in the checkout already)
            _print_pack(packs.pack(settings, args.out, since=started))
    return 0


def _float(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a number of seconds, got {text!r}") from None


def _background(args: argparse.Namespace, settings, total: int) -> int:
    """campaign start / stop / status / lane: the campaign as background processes (``atlib.paper.background``)."""
    from .paper import background, campaign
    if args.action == "status":
        jobs = [(c.run_id(), c.epochs) for c in campaign.value_order(settings)]
        print(background.describe(settings, background.progress(settings, jobs)))
        print(campaign.describe(campaign.status(settings), total, finished="finished").split("\n")[-1])
        return 0
    if args.action == "commit":
        if args.stop and background.read_state(settings) is not None:
            pids, _ = background.stop(settings, at_epoch_end=args.at_epoch_end)
            print(f"campaign stop: stopped pid {', '.join(map(str, pids))}" if pids else
                  "campaign stop: no lane was running")
        message = background.commit(settings)
        print(f"campaign commit: {message}" if message else "campaign commit: no run directory changed")
        return 0
    if args.action == "stop":
        if background.read_state(settings) is None:
            print(f"campaign stop: no campaign is running on {settings.store_root}; nothing to stop")
            return 0
        if args.at_epoch_end:
            print("campaign stop: each lane finishes the epoch in flight first (Ctrl-C, then `campaign stop`, to "
                  "drop it)", flush=True)
        pids, changed = background.stop(settings, at_epoch_end=args.at_epoch_end)
        print(f"campaign stop: stopped pid {', '.join(map(str, pids))}" if pids
              else "campaign stop: no lane was running (stale state removed)")
        print("changed run directories (commit them):" if changed else "no run directory changed")
        for path in changed:
            print(f"  {path}")
        return 0
    if args.action == "lane":
        return _lane(args, settings)
    if args.deadline is None:
        raise ConfigError("campaign start needs --deadline (seconds from now, or an end time HH:MM)")
    if args.compile and args.teacher_ahead:
        raise ConfigError("campaign start: --compile and --teacher-ahead together (torch.compile is not thread-safe); "
                          "pick one")
    until = background.parse_deadline(args.deadline)
    extra = [flag for flag, value in (("--device", args.device), ("--data-root", args.data_root)) if value
             for flag in (flag, value)] + (["--compile"] if args.compile else []) + \
        ([] if args.teacher_ahead is None else ["--teacher-ahead" if args.teacher_ahead else "--no-teacher-ahead"])
    state = background.start(settings, args.profile or "one-seed", until, args.lanes, args.threads, args.nice,
                             extra)
    print(f"campaign start: pid {', '.join(map(str, state['pids']))} ({state['lanes']} lane(s) x "
          f"{state['threads']} thread(s), nice {state['nice']}) until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))}; "
          f"log {state['log']}")
    return 0


def _lane(args: argparse.Namespace, settings) -> int:
    """One background lane: the campaign's runs in value order with claims, until ``--until``."""
    import contextlib
    import dataclasses
    import os
    import signal

    import torch

    from .paper import campaign
    from .paper.workers import work
    from .training import deadline

    def stop_now(signum, frame):  # campaign stop: leave the epoch in flight (its checkpoint is the last whole one)
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop_now)
    signal.signal(signal.SIGUSR1, deadline.request_stop)  # campaign stop --at-epoch-end: finish the epoch in flight
    if args.nice:
        os.nice(args.nice)
        # a lane leads its own session, hence its own scheduler autogroup: a process's nice value only ranks it
        # within its group, so the group's nice is what makes the lane yield to other work on the machine
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(f"{args.nice}\n")
    torch.set_num_threads(args.threads)
    for handler in logging.getLogger("atlib").handlers:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {args.name or 'lane'} %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    settings = dataclasses.replace(settings, train=True, progress=False)
    on_cpu = settings.device == "cpu" or (settings.device == "auto" and not torch.cuda.is_available())
    channels_last = True if on_cpu else None  # NHWC: 1.2-1.3x on CPUs (atlib.paper.demo); the engine's own on GPUs
    # the teacher one batch ahead on a second thread: in the lanes (a session each) AT 1.16x beside a student lane,
    # the student unchanged (docs/performance.md#the-teacher-one-batch-ahead); not with --compile (not thread-safe)
    teacher_ahead = on_cpu and not args.compile if args.teacher_ahead is None else args.teacher_ahead and on_cpu
    work(settings, name=args.name, configs=campaign.value_order(settings), until=args.until,
         channels_last=channels_last, compile=args.compile, teacher_ahead=teacher_ahead)
    return 0


def _print_pack(paths: list[Path]) -> None:
    if not paths:
        print("campaign pack: no runs to pack")
    for path in paths:
        print(f"campaign pack: {path} ({path.stat().st_size:,} bytes)")


COMMANDS = {"train": cmd_train, "runs": cmd_runs, "reproduce": cmd_reproduce, "plan": cmd_plan,
            "campaign": cmd_campaign, "work": cmd_work}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _log_to_stdout()
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as e:
        print(f"atlib {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except PipelineError as e:
        print(f"atlib {args.command}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"atlib {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
