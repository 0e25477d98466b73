"""Command line: ``python -m atlib train|runs|reproduce|plan|campaign ...``.

Every user error (unknown architecture or method, missing teacher run, missing data, bad option value) exits with
code 2 and one line naming the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .config import ConfigError, RunConfig
from .data import DataError
from .engine import DEFAULT_RESULTS, TrainingError, train
from .experiments import TABLES
from .methods import METHODS, method_terms
from .models import external
from .pipeline import PipelineError
from .store import RunStore, StoreError

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


def _groups(text: str) -> list[int]:
    """'1,3' (1-based, as the paper counts groups) -> [0, 2]."""
    try:
        groups = [int(g) - 1 for g in text.split(",") if g.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"groups must be comma-separated integers like 1,2,3, got {text!r}")
    if not groups or min(groups) < 0:
        raise argparse.ArgumentTypeError(f"groups are numbered from 1, got {text!r}")
    return groups


def _number(text: str) -> int | float:
    """'2' -> 2, '2.5' -> 2.5: an integral exponent stays an int, as in the experiment grids (same run id)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return int(value) if value.is_integer() else value


def _nodes(text: str) -> list[str]:
    nodes = [n.strip() for n in text.split(",") if n.strip()]
    if not nodes:
        raise argparse.ArgumentTypeError(f"nodes must be comma-separated node names like layer2,layer3, got {text!r}")
    return nodes


def _tapped(arch: str | None, nodes: list[str] | None, flag: str) -> str | None:
    """``arch`` with ``nodes`` appended (torchvision models only)."""
    if nodes is None or arch is None:
        if nodes is not None:
            raise ConfigError(f"{flag} needs a torchvision architecture beside it")
        return arch
    if not arch.startswith(external.PREFIX):
        raise ConfigError(f"{flag} applies to torchvision:<model> architectures, not {arch!r}")
    return external.full_name(arch[len(external.PREFIX):].split("@")[0], nodes)


def _epochs(text: str) -> list[int]:
    try:
        return [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"milestones must be comma-separated epochs like 30,60,90, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atlib", description="Attention transfer (Zagoruyko & Komodakis, ICLR 2017) replication")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one run (or return its record if finished; resume if interrupted)")
    t.add_argument("--student", required=True, help="architecture: wrn-16-1, wrn-40-2, nin-thin, nin-wide-nobn, ..., "
                   "or any torchvision classifier as torchvision:<model> (e.g. torchvision:mobilenet_v3_small)")
    t.add_argument("--student-nodes", type=_nodes, help="torchvision students: the nodes whose outputs AT compares, "
                   "e.g. features.1,features.3,features.8 (default: the family's, where atlib knows one)")
    t.add_argument("--method", default="student", help=f"one of {', '.join(sorted(METHODS))} (default student)")
    t.add_argument("--teacher", help="finished teacher run id (or unique prefix) in --results, or a weights file")
    t.add_argument("--teacher-arch", help="teacher architecture, needed for a bare weights file")
    t.add_argument("--teacher-nodes", type=_nodes, help="with a torchvision --teacher-arch: its nodes, e.g. "
                   "layer1,layer2,layer3")
    t.add_argument("--teacher-store", help="results store holding the --teacher run, e.g. results/one-seed "
                   "(default: --results)")
    t.add_argument("--epochs", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--beta", type=float, help="weight of the method's transfer term (AT default 1000)")
    t.add_argument("--p", type=_number, help="attention exponent p (AT default 2)")
    t.add_argument("--kind", help="attention function: sum or max (AT default sum)")
    t.add_argument("--groups", type=_groups, help="transfer at these groups only, numbered from 1, e.g. 2 or 1,3")
    t.add_argument("--at-form", dest="form", help="AT convention: code (default, authors' code) or paper (Eq. 2)")
    t.add_argument("--start-epoch", type=int, help="epoch (from 0) at which the transfer term starts (default 0)")
    t.add_argument("--T", type=float, help="KD temperature (default 4)")
    t.add_argument("--alpha", type=float, help="KD weight of the soft term (default 0.9)")
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--lr-decay", type=float, default=0.2, help="lr factor at each milestone (default 0.2)")
    t.add_argument("--milestones", type=_epochs, help="lr drop epochs, e.g. 30,60,90 (default: 60/120/160 of 200, "
                   "scaled to --epochs)")
    t.add_argument("--batch-size", type=int, default=128, help="global batch size (split over torchrun processes)")
    t.add_argument("--eval-batch-size", type=int, default=1000)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--augment", default="crop+flip", help="crop+flip (authors), flip (Table 3) or none")
    t.add_argument("--precision", default="fp32", help="fp32 (default) or bf16")
    t.add_argument("--train-subset", type=int, help="train on the first N training images only")
    t.add_argument("--test-subset", type=int, help="evaluate on the first N test images only")
    t.add_argument("--data-root", help="directory holding cifar-10-batches-py (default $ATLIB_DATA, else ./data)")
    t.add_argument("--sample", action="store_true", help="use the embedded CIFAR-10 sample instead of the full set")
    t.add_argument("--dataset", default="cifar10",
                   help="cifar10 (default), sample, or image folders: folder (train/ and val/), cub, imagenet")
    t.add_argument("--image-size", type=int, default=224, help="image folders: crop size (default 224)")
    t.add_argument("--pretrained", help="resnet: 'imagenet' (torchvision's weights) or a weights file")
    t.add_argument("--weights-dir", help="where to look for torchvision's ImageNet weight files first")
    t.add_argument("--freeze-bn", action="store_true", help="freeze every BN layer (statistics and affine)")
    t.add_argument("--freeze-groups", type=int, default=0, help="freeze the stem and the first N residual groups")
    t.add_argument("--workers", type=int, default=0, help="image folders: DataLoader worker processes")
    t.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    t.add_argument("--results", default=DEFAULT_RESULTS, help="results directory (default ./results)")
    t.add_argument("--restart", action="store_true", help="discard this run's checkpoint and records, train anew")
    t.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    t.add_argument("--no-graph", dest="graph", action="store_false", default=None,
                   help="on a GPU, run the step eagerly instead of capturing it as a CUDA graph")

    rp = sub.add_parser("reproduce", help="run the notebook sequence with papermill for a profile")
    rp.add_argument("--profile", default="one-seed", help="one-seed (default: on a CPU, the tables from the stored "
                    "runs; on a GPU, trains what is missing), paper, cpu-demo (attention transfer with little data on a "
                    "CPU, ~17 min), smoke (the 2-epoch end-to-end test), or a YAML file")
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
    pl.add_argument("--concurrent", type=int, default=1, help="single runs of one shape trained at once on a GPU "
                    "(default 1)")
    pl.add_argument("--tables", nargs="+", help=f"tables to plan (default all CIFAR-10 ones: {', '.join(TABLES)})")

    c = sub.add_parser("campaign", help="train a profile's CIFAR-10 suite in value order until a deadline; "
                       "pack / import its runs; status",
                       description="campaign --profile P --deadline SECONDS [--out DIR]: train the next groups until "
                       "the deadline (stops at an epoch boundary, every unfinished run resumable; with --out, pack "
                       "the runs there). campaign pack --profile P --out DIR: pack the profile's runs. campaign "
                       "import PATH...: import a pack (its parts, or a directory holding them). campaign status "
                       "--profile P: where every run of the suite stands.")
    c.add_argument("action", nargs="?", default="run", choices=["run", "pack", "import", "status"])
    c.add_argument("paths", nargs="*", help="import: the pack's parts, or a directory holding them")
    c.add_argument("--profile", help="one-seed (default), paper, or a YAML file; import: the profile the pack "
                   "must hold (default: the one it holds)")
    c.add_argument("--deadline", type=float, help="run: seconds from now by which training stops")
    c.add_argument("--out", help="run: pack the runs into this directory when done; pack: where to write")
    c.add_argument("--data-root", help="override the profile's data root")
    c.add_argument("--device", help="override the profile's device")
    c.add_argument("--results", dest="results_dir", help="override the profile's results directory")

    r = sub.add_parser("runs", help="list stored runs with their status and final test error")
    r.add_argument("--results", default=DEFAULT_RESULTS)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    terms = method_terms(args.method, beta=args.beta, p=args.p, kind=args.kind, groups=args.groups,
                         form=args.form, T=args.T, alpha=args.alpha, start_epoch=args.start_epoch)
    return RunConfig(
        student=_tapped(args.student, args.student_nodes, "--student-nodes"), method=args.method, terms=terms,
        teacher=args.teacher, teacher_arch=_tapped(args.teacher_arch, args.teacher_nodes, "--teacher-nodes"),
        epochs=args.epochs, seed=args.seed, lr=args.lr, lr_decay=args.lr_decay, lr_milestones=args.milestones,
        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, weight_decay=args.weight_decay,
        augment=args.augment, precision=args.precision, train_subset=args.train_subset, test_subset=args.test_subset,
        dataset="sample" if args.sample else args.dataset, data_root=args.data_root, device=args.device,
        image_size=args.image_size, pretrained=args.pretrained, weights_dir=args.weights_dir,
        freeze_bn=args.freeze_bn, freeze_groups=args.freeze_groups, workers=args.workers,
        teacher_store=args.teacher_store)


# RunConfig field -> the `atlib train` flag that sets it (fields without one cannot be written as a command)
FIELD_FLAGS = {"teacher": "--teacher", "teacher_arch": "--teacher-arch", "epochs": "--epochs", "seed": "--seed",
               "lr": "--lr", "lr_decay": "--lr-decay", "lr_milestones": "--milestones", "batch_size": "--batch-size",
               "eval_batch_size": "--eval-batch-size", "weight_decay": "--weight-decay", "augment": "--augment",
               "precision": "--precision", "train_subset": "--train-subset", "test_subset": "--test-subset",
               "dataset": "--dataset", "image_size": "--image-size", "pretrained": "--pretrained",
               "freeze_bn": "--freeze-bn", "freeze_groups": "--freeze-groups"}
# method option -> flag (see methods.method_terms)
OPTION_FLAGS = {"beta": "--beta", "p": "--p", "kind": "--kind", "groups": "--groups", "form": "--at-form",
                "T": "--T", "alpha": "--alpha", "start_epoch": "--start-epoch"}


def train_command(config: RunConfig, results: str | Path) -> str | None:
    """The ``python -m atlib train`` command line that trains exactly ``config`` into ``results`` (the same run
    id), or None where a field has no flag. Only what differs from the command's defaults is written."""
    from .methods import _OPTION_TERMS
    default = config_from_args(build_parser().parse_args(["train", "--student", config.student, "--method",
                                                          config.method]))
    if set(config.terms) != set(default.terms):
        return None
    words = ["python", "-m", "atlib", "train", "--student", config.student]
    if config.method != "student":
        words += ["--method", config.method]
    mine, theirs = config.identity(), default.identity()
    for name in sorted(mine):
        if name in ("student", "method", "terms") or mine[name] == theirs[name]:
            continue
        if name not in FIELD_FLAGS:
            return None
        value = mine[name]
        if isinstance(value, bool):
            if not value:  # the flags only switch on
                return None
            words.append(FIELD_FLAGS[name])
        elif isinstance(value, (list, tuple)):
            words += [FIELD_FLAGS[name], ",".join(map(str, value)) or "''"]  # '' : an empty list (no lr drops)
        else:
            words += [FIELD_FLAGS[name], str(value)]
    for option, flag in OPTION_FLAGS.items():
        term = next((t for t in _OPTION_TERMS[option] if t in config.terms), None)
        if term is None:
            continue
        value, base = config.terms[term].get(option), default.terms.get(term, {}).get(option)
        if value is not None and value != base:
            words += [flag, ",".join(str(g + 1) for g in value) if option == "groups" else str(value)]
    if config.teacher_store is not None:
        words += ["--teacher-store", str(config.teacher_store)]
    return " ".join(words + ["--results", str(results)])


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.teacher is None and config.needs_teacher:
        raise ConfigError(f"method {args.method!r} needs --teacher")
    record = train(config, results=args.results, progress=not args.quiet, restart=args.restart,
                   log=None if args.quiet else print, graph=args.graph)
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
    from .pipeline import run_sequence
    train = {"auto": "auto", "yes": True, "no": False, None: None}[args.train]
    overrides = {**_overrides(args.set), **{k: v for k, v in (("device", args.device), ("data_root", args.data_root),
                                                               ("results_dir", args.results_dir), ("train", train))
                                             if v is not None}}
    run_sequence(args.profile, overrides=overrides, only=args.only)
    return 0


def cmd_work(args: argparse.Namespace) -> int:
    from .claims import work
    from .experiments import settings_from_profile
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
    from .experiments import settings_from_profile
    from .plan import estimate, format_plan, load_rates, plan_groups
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
    from . import campaign, packs
    from .experiments import settings_from_profile
    if args.action != "import" and args.paths:
        raise ConfigError(f"campaign {args.action} takes no paths, got {' '.join(args.paths)}")
    if args.action == "import":
        if not args.paths:
            raise ConfigError("campaign import needs the pack's parts or a directory holding them")
        results = args.results_dir or "results"
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
    if args.action == "status":
        print(campaign.describe(campaign.status(settings), total, finished="finished"))
        return 0
    if args.deadline is None or not args.deadline > 0:
        raise ConfigError(f"campaign needs --deadline SECONDS > 0, got {args.deadline}")
    if not campaign.groups(settings):
        print(f"campaign: nothing left to train: all {total} runs of profile {settings.profile!r} are finished "
              f"in {settings.store_root}")
        return 0
    started = time.time()
    try:
        outcome = campaign.run(settings, args.deadline)
        print(campaign.describe(outcome, total))
    finally:
        if args.out:  # what this call changed (the rest is in the checkout already)
            _print_pack(packs.pack(settings, args.out, since=started))
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
