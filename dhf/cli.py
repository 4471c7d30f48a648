"""``dhf-train``: train a built-in job from a TOML config, serially or under mpirun.

    dhf-train                                   # the default job (temporal order, T = 100)
    mpirun -n 4 dhf-train configs/memorization.toml --set optimizer.cg_max_iters=300
"""
from __future__ import annotations

from dhf.heap import keep_freed_memory
from dhf.launcher import launched_under_mpi, launcher_on_terminal, one_thread_per_rank

# One BLAS thread per process unless the user says otherwise: under a launcher the ranks
# are the parallelism and oversubscribed threads make every rank slower; serially too,
# dhf's products are small per-chunk GEMMs and Numba loops that BLAS threads do not
# speed up, and on a busy machine they are 5 x slower (docs/benchmarks.md).  Must precede
# numpy, which is why nothing above imports it (dhf.comm would).
one_thread_per_rank()
# Freed memory kept for the next chunk's buffers, before numpy, MPI or JAX allocate any
# (dhf.heap): a big model's update otherwise spends a quarter of its time faulting pages.
keep_freed_memory()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
from pathlib import Path  # noqa: E402

from dhf import config as config_mod  # noqa: E402
from dhf.comm import Communicator, get_comm, on_root, run_or_abort  # noqa: E402
from dhf.errors import UserError  # noqa: E402
from dhf.log import CGProgress, setup_logging  # noqa: E402

logger = logging.getLogger("dhf.cli")


def build_parser() -> argparse.ArgumentParser:
    keys = "\n".join(f"  {sec}.{key} = {config_mod.toml_value(default)}: {doc}"
                     for sec, items in config_mod.SCHEMA.items()
                     for key, (default, doc, *_) in items.items())
    job = config_mod.DEFAULT_JOB["task"]
    parser = argparse.ArgumentParser(
        prog="dhf-train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Distributed Hessian-free training. Run under mpirun -n N to spread "
                    "every gradient and Gv product over N ranks.",
        epilog="config keys (SECTION.KEY = default, as TOML: --set run.dtype='float64', "
               "--set optimizer.held_out=false).\nThe task's recommended settings "
               "(configs/TASK.toml) replace these defaults, and yours replace both; "
               "--dry-run prints what a run will use.\n" + keys)
    parser.add_argument("config", nargs="?", help="TOML config file (default: the "
                        f"built-in default job, {job['name']} at T = {job['T']}, "
                        "with its task's recommended settings)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key; repeatable")
    parser.add_argument("--out", help="run directory (default: run.out, else "
                        "runs/<task>-<date-time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out "
                        "(default: the newest runs/<task>-*) from its checkpoint.h5")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config, "
                        "parameter count and per-rank batch split, then exit")
    parser.add_argument("--ranks", type=_rank_counts, metavar="N[,N...]",
                        help="with --dry-run: the work each rank would get at these rank "
                             "counts (e.g. 1,2,4,8,16,32,64), without starting them")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                        help="progress bar over each update's CG iterations: auto shows it "
                             "when a terminal is attached (under mpirun too)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less output")
    return parser


def _rank_counts(text: str) -> list[int]:
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected rank counts like 1,2,4,64, got "
                                         f"{text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    comm = get_comm()
    setup_logging(comm.rank, args.verbose - args.quiet)
    return run_or_abort(comm, lambda: _main(args, comm))


def _main(args: argparse.Namespace, comm: Communicator) -> int:
    config = on_root(comm, lambda: config_mod.load(args.config, args.set))
    if args.dry_run:
        return _dry_run(config, comm, args.ranks)
    out = Path(on_root(comm, lambda: _choose_out(config, args)))
    if args.resume:
        config = on_root(comm, lambda: _resumed_config(out, args)) or config
    config["run"]["out"] = str(out)
    interactive = comm.rank == 0 and args.quiet == 0 and _show_progress(args.progress)
    if interactive:  # at once: the imports, the data and compiling take seconds
        logger.info("dhf: %s %s on %s into %s", "resuming" if args.resume else "starting",
                    config["data"]["path"] or config["task"]["name"], _ranks(comm.size),
                    out)
    from dhf.run import train  # heavy imports (PyTensor) only when training

    received = _catch_stop_signals()
    progress = None
    if interactive:
        opt = config["optimizer"]
        progress = (CGProgress(opt["cg_max_iters"]) if opt["name"] == "hf" else
                    CGProgress(opt["sgd_steps"], desc=opt["name"].upper(), value="loss"))
    limit = config["run"]["max_minutes"] * 60
    deadline = time.monotonic() + limit

    def out_of_time() -> bool:  # each rank's own clock; the stop flag is allreduced
        return bool(limit) and time.monotonic() > deadline

    result = train(config, comm, out, resume=args.resume, on_cg_iter=progress,
                   should_stop=lambda: bool(received) or out_of_time())
    if result.stopped:
        # Ranks agree on why: any signal anywhere means the scheduler wants the job gone
        # (exit 128 + signal); otherwise the time limit ended a run that is fine (exit 0).
        import numpy as np

        signalled = comm.allreduce_sum(np.array([float(bool(received))]))[0] > 0
        if signalled:
            return 128 + int(received[0] if received else signal.SIGTERM)
        logger.info("run.max_minutes = %g reached", config["run"]["max_minutes"])
    if comm.rank == 0:
        print("result: updates={updates} train_loss={train_loss:.6g} valid_loss={vl} "
              "valid_error={ve} seconds={seconds:.1f}".format(
                  vl=_fmt(result.valid_loss), ve=_fmt(result.valid_error),
                  updates=result.updates, train_loss=result.train_loss,
                  seconds=result.seconds),
              flush=True)
    return 0


def _resumed_config(out: Path, args) -> dict | None:
    """The config of the run being resumed: its own ``config.toml`` (but for its time
    limit), then the config file and ``--set`` given now (a time limit, more updates).
    None if it has no ``config.toml``.  What may not change on resume is checked by
    :mod:`dhf.run`."""
    path = out / "config.toml"
    if not path.exists():
        return None
    try:
        base = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML ({err}); pass the run's config "
                        "file and --set options instead") from None
    # A time limit belongs to one invocation, not to the run: it does not carry over.
    base.setdefault("run", {})["max_minutes"] = config_mod.defaults()["run"]["max_minutes"]
    return config_mod.load(args.config, args.set, base=base)


def _catch_stop_signals() -> list:
    """SIGTERM and SIGUSR1 (what Slurm and PBS send before preemption or the time limit)
    and SIGINT (Ctrl-C) ask for a checkpoint and a clean exit instead of killing the
    process; the returned list receives the signal numbers.  A second SIGINT stops at
    once (exit 130), keeping the last checkpoint written."""
    received: list = []

    def handler(signum, frame):
        if signum == signal.SIGINT and signal.SIGINT in received:
            logger.warning("interrupted again: stopping now; the last checkpoint stays")
            logging.shutdown()
            os._exit(128 + signal.SIGINT)
        received.append(signum)
        logger.warning("received %s: stopping after a checkpoint%s",
                       signal.Signals(signum).name,
                       " (Ctrl-C again to stop now)" if signum == signal.SIGINT else "")

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, handler)
    return received


def _show_progress(choice: str) -> bool:
    """``--progress``: on, off, or auto: when stdout is a terminal, or, under an MPI
    launcher (whose pipes stand between rank 0 and the terminal), when the launcher's
    stderr is one (:func:`dhf.launcher.launcher_on_terminal`) or the job has a
    controlling terminal (an interactive ``mpirun``, not a batch job)."""
    if choice != "auto":
        return choice == "on"
    if sys.stdout.isatty():
        return True
    if not launched_under_mpi():
        return False
    if launcher_on_terminal():
        return True
    try:  # a launcher that keeps its ranks in the terminal's session
        os.close(os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY))
        return True
    except OSError:
        return False


def _fmt(x) -> str:
    return "nan" if x is None else f"{x:.6g}"


def _choose_out(config: dict, args) -> str:
    if args.out:
        return args.out
    if config["run"]["out"]:
        return config["run"]["out"]
    name = config["task"]["name"]
    if args.resume:
        runs = sorted(p.parent for p in Path("runs").glob(f"{name}-*/checkpoint.h5"))
        if not runs:
            raise UserError(f"--resume: no runs/{name}-* directory with a checkpoint.h5; "
                            "pass --out DIR")
        return str(runs[-1])
    return str(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def _dry_run(config: dict, comm: Communicator, ranks: list[int] | None = None) -> int:
    """The resolved config (with a data file's own task), the parameter count, the
    training rows and each batch's split over ranks (this run's, or each of ``ranks``:
    :func:`_work_table`); the batches are checked against the rows, as a run would."""
    from dhf import tasks
    from dhf.backends import backend_of, chunk_rows_of, looped_of
    from dhf.batches import BatchSizes
    from dhf.run import memory_needs
    from dhf.sources import training_rows
    from dhf.worker import chunk_size, rows_per_rank

    n_train = training_rows(config)
    BatchSizes.of(config["optimizer"]).check(n_train, n_train is None)
    spec = tasks.get(config["task"]["name"]).build_model(config)
    n_params = sum(p.get_value(borrow=True).size for p in spec.params)
    if comm.rank == 0:
        print(config_mod.to_toml(config))
        print(f"# parameters: {n_params}")
        where = config["data"]["path"] or f"task {config['task']['name']}"
        print(f"# training rows: {'fresh every update' if n_train is None else n_train} "
              f"({where})")
        opt = config["optimizer"]
        batches = (("gradient_batch", "curvature_batch", "backtrack_batch",
                    "linesearch_batch") if opt["name"] == "hf" else ("sgd_batch",))
        full = opt["name"] == "hf" and opt["gradient_batch"] == 0
        whole = backend_of(config["run"]) == "jax"
        cap = chunk_rows_of(config["run"], spec)
        looped = looped_of(config["run"], spec, cap)
        gpu = config["run"]["device"] == "gpu"
        sizes = {key: (n_train if full and key in ("gradient_batch", "backtrack_batch")
                       else 0 if full and key == "linesearch_batch" else opt[key])
                 for key in batches}
        from dhf import memory

        counts = ranks or [comm.size]
        for n, need in zip(counts, memory_needs(config, spec, counts)):
            print(f"# memory per rank at {_ranks(n)}, estimated: {need.describe()}")
        _, on_node = comm.node_ranks()
        have = memory.available_per_rank(on_node)
        if have is not None:
            print(f"# memory a rank can have here ({_ranks(on_node)} on this "
                  f"machine): {memory.format_bytes(have)}")
        if ranks:
            print(_work_table(sizes, ranks, cap, whole=whole, gpu=gpu, looped=looped))
        for key, rows in ([] if ranks else sizes.items()):
            split = rows_per_rank(rows, comm.size, cap, whole=whole, gpu=gpu,
                                  looped=looped)
            size = chunk_size(rows, cap, whole=whole, ranks=comm.size if gpu else 0,
                              looped=looped)
            print(f"# {key} per rank ({_ranks(comm.size)}, chunks of {size} rows): "
                  f"{split}")
        sys.stdout.flush()
    return 0


def _ranks(n: int) -> str:
    return f"{n} rank" if n == 1 else f"{n} ranks"


def _work_table(sizes: dict[str, int], ranks: list[int], cap: int, *, whole: bool,
                gpu: bool, looped: bool) -> str:
    """Each batch's work at each of ``ranks`` rank counts: the busiest rank's rows and
    compiled calls (each of up to ``cap`` rows: one chunk, or looped several), and how
    many ranks get no rows of it (they wait at its sums)."""
    from dhf.worker import calls_of, chunk_size, chunks_per_rank

    sizes = {key: rows for key, rows in sizes.items() if rows}  # 0: none drawn
    head = "# ranks | " + " | ".join(
        f"{key} {rows}: rows / calls, idle" for key, rows in sizes.items())
    lines = [f"# work per rank (the busiest rank's rows / compiled calls of chunks of "
             f"the size given{', several a call' if looped else ''}; ranks with none of "
             "the batch)", head]
    for n in ranks:
        cells = []
        for rows in sizes.values():
            share = chunks_per_rank(rows, n, cap, whole=whole, gpu=gpu, looped=looped)
            busiest = max(share, key=sum)
            idle = sum(1 for c in share if not c)
            size = chunk_size(rows, cap, whole=whole, ranks=n if gpu else 0,
                              looped=looped)
            cells.append(f"{sum(busiest)} / {calls_of(busiest, cap, looped)} x {size}, "
                         f"{idle} idle")
        lines.append(f"# {n:5d} | " + " | ".join(cells))
    return "\n".join(lines)


@contextlib.contextmanager
def _writing(path):
    """An OS error while writing ``path`` (a missing or read-only directory, a full disk)
    as one line naming it."""
    try:
        yield
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise UserError(f"{path}: cannot write: {reason}") from None


def build_data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dhf-data", description="Write a built-in problem to an HDF5 data set "
        "(train/valid/test splits) for dhf-train --set data.path=FILE.")
    parser.add_argument("name", help="task name, e.g. memorization")
    parser.add_argument("--out", required=True, help="HDF5 file to write")
    parser.add_argument("--set", action="append", default=[], metavar="task.KEY=VALUE",
                        help="task parameter, e.g. task.T=50; repeatable")
    parser.add_argument("--force", action="store_true",
                        help="overwrite --out if it exists (runs trained on it then "
                             "resume on other data)")
    return parser


def data_main(argv: list[str] | None = None) -> int:
    """``dhf-data NAME --out FILE.h5 [--set task.KEY=VALUE ...]``."""
    args = build_data_parser().parse_args(argv)
    setup_logging(0)
    return run_or_abort(get_comm(), lambda: _write_data(args))


def _write_data(args) -> int:
    from dhf import dataset, tasks

    for item in args.set:
        if not item.startswith("task."):
            raise UserError(f"--set {item}: dhf-data takes task.KEY=VALUE only")
    config = config_mod.load(None, [f"task.name={args.name!r}"] + args.set)
    if Path(args.out).exists() and not args.force:
        raise UserError(f"{args.out}: already exists; pass --force to overwrite it")
    splits = tasks.generate_splits(config, test=True)
    with _writing(args.out):
        dataset.write(args.out, splits, task=args.name, task_params=config["task"],
                      seed=config["task"]["seed"])
    rows = ", ".join(f"{k} {len(v[0])}" for k, v in splits.items())
    logger.info("wrote %s: %s rows (task %s)", args.out, rows, args.name)
    return 0


def export_main(argv: list[str] | None = None) -> int:
    """``dhf-export RUN_DIR [--format npz|json] [--out FILE]``: the parameters by name,
    portable, with the model's equations (:mod:`dhf.export`)."""
    parser = argparse.ArgumentParser(
        prog="dhf-export", description="Write a run's parameters by name, in the model's "
        "order, with its equations, orientation and output nonlinearity, to "
        "RUN_DIR/params.npz or params.json (the best ones from best.h5, else the last "
        "ones).")
    parser.add_argument("run_dir")
    parser.add_argument("--format", choices=("npz", "json"), default=None,
                        help="default: from --out's suffix, else npz")
    parser.add_argument("--out", help="file to write (default: RUN_DIR/params.FORMAT)")
    parser.add_argument("--last", action="store_true",
                        help="export checkpoint.h5's last parameters, not best.h5's")
    args = parser.parse_args(argv)
    setup_logging(0)
    return run_or_abort(get_comm(), lambda: _export(args))


def _export(args) -> int:
    from dhf import export
    from dhf.checkpoint import read_params

    run = Path(args.run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    source = run / ("checkpoint.h5" if args.last or not (run / "best.h5").exists()
                    else "best.h5")
    if not source.exists():
        raise UserError(f"{run}: not a run directory of dhf-train (it has no "
                        f"{'best.h5 or ' if not args.last else ''}checkpoint.h5)")
    params = read_params(source)
    suffix = Path(args.out).suffix.lstrip(".") if args.out else ""
    fmt = args.format or (suffix if suffix in ("npz", "json") else "npz")
    target = Path(args.out) if args.out else run / f"params.{fmt}"
    if target.suffix != f".{fmt}":
        raise UserError(f"--out {target}: the file name must end in .{fmt} "
                        f"(--format {fmt})")
    model = export.describe(run, params)
    with _writing(target):
        export.write(target, params, model)
    logger.info("wrote %s from %s: %s", target, source.name,
                ", ".join(f"{k} {v.shape}" for k, v in params.items()))
    return 0


def plot_main(argv: list[str] | None = None) -> int:
    """``dhf-plot RUN_DIR [RUN_DIR ...] --out FILE.png``."""
    parser = argparse.ArgumentParser(
        prog="dhf-plot", description="Plot training curves from run directories' "
        "metrics.jsonl, runs overlaid.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", default="dhf-plot.png", help="PNG to write "
                        "(default: dhf-plot.png)")
    args = parser.parse_args(argv)
    setup_logging(0)

    def plot() -> int:
        from dhf.plot import plot_runs, run_label

        labels = [run_label(d, recurrent=_recurrent) for d in args.run_dirs]
        with _writing(args.out):
            logger.info("wrote %s", plot_runs(args.run_dirs, args.out, labels))
        return 0

    return run_or_abort(get_comm(), plot)


def _recurrent(task_name: str) -> bool:
    """Is the task recurrent (so that its T means something)?  True when unknown."""
    from dhf import tasks

    try:
        return "recurrent" in tasks.kinds(task_name)
    except UserError:
        return True


if __name__ == "__main__":
    sys.exit(main())
