"""``zsad rank``: score every architecture of a search space and rank them."""

from __future__ import annotations

import os
import shlex

import click
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from zsad.verdict import HEALTHY_MAX, LINEAR_MAX
from zsad_cli.app import cli, emit_json, err_console, fail, handle_errors, out_console, x64_option
from zsad_cli.render import fmt

_BAND = f"[{LINEAR_MAX:g}, {HEALTHY_MAX:g}]"

METRICS_HELP = (
    f"Comma-separated metrics, or 'all' (default): nlc (band: best inside {_BAND}; also nlc_std and nlc_block, "
    "lower is better), sigma2 (near 1: mean squared Jacobian singular value of the hidden layers), params (higher), "
    "flops (higher), naswot (higher), synflow (higher, log), grad_norm (higher, log), snip (higher, log), "
    "jacob_cov (higher).")


def by_help() -> str:
    """The help of ``--by``: the default score's formula, from :mod:`zsad.ranking`."""
    from zsad.ranking import short_formula  # numpy: loaded when the help is shown, not at every start

    return (f"Rank by 'score' (default: {short_formula()}; see benchmarks/RESULTS_SCORE.md), by one "
            "metric column (its direction), or by several comma-separated (mean of per-metric ranks).")


class _LazyHelpOption(click.Option):
    """An option whose help text is made by ``help_text()`` when help is shown."""

    def __init__(self, *args, help_text, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_text = help_text

    @property
    def help(self) -> str:
        return self.help_text()

    @help.setter
    def help(self, value) -> None:  # click sets it in __init__; the text is help_text()'s
        pass


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} archs/s" if speed else "… archs/s", style="cyan")


@cli.command()
@click.argument("space_file", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False),
              help="Results file: .csv, .jsonl or .parquet (+ FILE.meta.json).")
@click.option("--resume", is_flag=True, help="Continue an interrupted --out file; finished architectures are skipped.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--metrics", default="all", show_default=True, help=METRICS_HELP)
@click.option("--by", default="score", show_default=True, cls=_LazyHelpOption, help_text=by_help)
@click.option("--top", default=10, show_default=True, type=click.IntRange(1), help="Rows of the ranked table.")
@click.option("--wide", is_flag=True, help="Every column and whole names in the table, however wide the terminal.")
@click.option("--seeds", default=2, show_default=True, type=click.IntRange(1), help="Initializations per architecture.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(2), help="Samples in the scoring batch.")
@click.option("--tangents", default=2, show_default=True, type=click.IntRange(1), help="Tangents per sample (NLC).")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed of the initializations.")
@click.option("--json", "as_json", is_flag=True, help="Print the top rows and the metadata as JSON on stdout.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Score on a Ray cluster (needs pip install 'zsad[ray]'): --ray alone (or --ray local) starts a "
                   "local cluster; --ray auto joins the one `ray start --head` runs on this machine; or "
                   "HOST:6379, ray://HOST:10001. Put SPACE_FILE before a bare --ray.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="With --ray: workers (default: one per CPU of the cluster, one per GPU if it has GPUs).")
@click.option("--devices", type=click.IntRange(1), default=None,
              help="Use the first N local JAX devices (default: all); architectures are spread over them.")
@x64_option
@handle_errors
def rank(space_file, out, resume, overwrite, metrics, by, top, wide, seeds, batch, tangents, seed, as_json,
         ray_address, workers, devices):
    """Score every architecture of the search space in SPACE_FILE and rank them (1 = best)."""
    from zsad._errors import SpecError
    from zsad.rank import RankInterrupted, RankOptions, check_out, parse_metrics, rank_space
    from zsad.space import load_space

    check_out(out, resume=resume, overwrite=overwrite)  # before any work
    space = load_space(space_file)
    options = RankOptions(seeds=seeds, batch=batch, tangents=tangents, seed=seed, metrics=parse_metrics(metrics))
    if ray_address is None and workers is not None:
        raise SpecError("--workers: applies to a Ray cluster; add --ray")
    if ray_address is not None and devices is not None:
        raise SpecError("--devices: applies to this machine's devices, not to Ray workers (each uses its own)")
    from zsad.cluster import local_devices, ray_runner

    local = local_devices(devices)
    runner = ray_runner(ray_address, workers=workers) if ray_address is not None else None
    try:
        with _progress(space.size) as advance:
            result = rank_space(space, options, out=out, resume=resume, overwrite=overwrite, by=by,
                                on_progress=advance, devices=local, runner=runner)
    except RankInterrupted as stop:
        _interrupted(stop, out)
    finally:
        if runner is not None:
            runner.close()
    if as_json:
        emit_json({"meta": result.meta, "rows": result.top(top)}, None, True)
    else:
        _render(result, top, out, wide)


class _progress:
    """A rich progress bar on stderr (archs/s, ETA); yields ``advance(done, total)``."""

    def __init__(self, total):
        self.bar = Progress(TextColumn("[bold]ranking"), BarColumn(), MofNCompleteColumn(), _Rate(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=True)
        self.task = self.bar.add_task("rank", total=total)
        self.first = None

    def __enter__(self):
        if not err_console.is_terminal:  # a file or a pipe: no bar (it would leave a blank line)
            return lambda done, total: None
        self.bar.start()

        def advance(done, total):
            if self.first is None:  # resumed rows do not count towards the rate
                self.first = done
                self.bar.reset(self.task, total=total, completed=done)
            self.bar.update(self.task, completed=done, total=total)

        return advance

    def __exit__(self, *exc):
        if self.bar.live.is_started:
            self.bar.stop()
        return False


def resume_command() -> str:
    """The command that continues this run: every option given, ``--overwrite`` left out, ``--resume`` added."""
    import jax

    ctx = click.get_current_context()
    parts = ["zsad", ctx.command.name]
    for param in ctx.command.params:
        if isinstance(param, click.Argument):
            parts.append(str(ctx.params[param.name]))
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in ("resume", "overwrite", "debug"):
            continue
        value = ctx.params.get(param.name)
        if value is None or value == param.default:
            continue
        if param.is_flag:
            if value is True:
                parts.append(param.opts[0])
        else:
            parts += [param.opts[0], str(value)]
    if jax.config.jax_enable_x64:
        parts.append("--x64")
    parts.append("--resume")
    return " ".join(shlex.quote(p) for p in parts)


def _interrupted(stop, out) -> None:
    if out:
        fail(f"interrupted after {stop.done} architecture(s); every finished row is in {out}. "
             f"Continue with: {resume_command()}", 130)
    fail(f"interrupted after {stop.done} architecture(s) (nothing saved: pass --out FILE to keep results)", 130)


def _num(value, column: str) -> str:
    if value is None:
        return "—"
    if column in ("params", "flops"):
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
        return str(value)
    return fmt(value, digits=3)


#: The metric columns a narrow table keeps first (after those of --by); the rest follow in column order.
_PRIORITY = ("nlc", "sigma2", "params", "flops")
#: Fewest characters of an architecture name shown in a narrow table.
_NAME_MIN = 16


def _elide(name: str, width: int) -> str:
    """``name`` cut in the middle to ``width`` characters (head … tail)."""
    if len(name) <= width:
        return name
    head = width // 2
    tail = width - 1 - head
    return name[:head] + "…" + (name[-tail:] if tail else "")


def _common_affixes(names: list[str]) -> tuple[int, int]:
    """Lengths of the prefix and of the suffix that every name shares (not overlapping)."""
    if len(names) < 2:
        return 0, 0
    pre = len(os.path.commonprefix(names))
    shortest = min(len(n) for n in names)
    suf = len(os.path.commonprefix([n[::-1] for n in names]))
    return pre, min(suf, shortest - pre)


def short_names(names: list[str], width: int) -> tuple[list[str], bool]:
    """Names of at most ``width`` characters that stay distinct where the full names are.

    Cut in the middle first; where that makes two names equal, the parts every name shares (prefix
    and suffix) are cut instead, so that what differs stays visible; where even that collides, short
    ids ``#1, #2, …``. Returns the names and whether they are ids (a legend must follow)."""
    if all(len(n) <= width for n in names):
        return list(names), False

    def distinct(short: list[str]) -> bool:
        return len(set(short)) == len(set(names))

    cut = [_elide(n, width) for n in names]
    if distinct(cut):
        return cut, False
    pre, suf = _common_affixes(names)
    keep = 3  # a few shared characters stay on each side, as a reminder of what was cut
    cores = []
    for n in names:
        core = n[max(0, pre - keep):len(n) - max(0, suf - keep)]
        core = ("…" if pre > keep else "") + core + ("…" if suf > keep else "")
        cores.append(_elide(core, width))
    if distinct(cores):
        return cores, False
    return [f"#{i + 1}" for i in range(len(names))], True


def _table(result, rows: list[dict], metric_cols: list[str], names: list[str]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=f"top {len(rows)} of {len(result.rows)} "
                                             f"(by {', '.join(result.by)}; rank 1 = best)")
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("arch", no_wrap=True)
    for c in metric_cols:
        table.add_column(c, justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for row, name in zip(rows, names):
        cells = [fmt(row["nlc"], row.get("nlc_std"), digits=3) if c == "nlc" else _num(row[c], c)
                 for c in metric_cols]
        table.add_row(str(row["rank"]), Text(name), *cells, _num(row["score"], "score"),
                      Text(row["status"], style="green" if row["status"] == "ok" else "red"))
    return table


def _width(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def _render(result, top: int, out: str | None, wide: bool = False) -> None:
    """The ranked table on stdout. In a terminal (unless ``wide``) it fits the terminal's width: the
    ``rank``, ``arch``, ``score`` and ``status`` columns always show, metric columns are added while
    they fit (those of ``--by`` first) and the others named below; names are cut so that they stay
    distinct. A file or a pipe gets every column and whole names."""
    metric_cols = [c for c in result.columns if c not in ("arch", "status", "reason", "score", "rank", "nlc_std")]
    rows = result.top(top)
    full = [row["arch"] for row in rows]
    console = out_console
    fit = console.is_terminal and not wide
    if not fit:  # a file, a pipe or --wide: as wide as the table, never truncated
        table = _table(result, rows, metric_cols, full)
        console = Console(highlight=False, width=max(_width(console, table), console.width))
        shown, hidden, ids = metric_cols, [], False
    else:
        limit = console.width
        order = [c for c in result.by if c in metric_cols]
        order += [c for c in _PRIORITY if c in metric_cols and c not in order]
        order += [c for c in metric_cols if c not in order]
        chosen: list[str] = []
        # names keep about a third of the width (or their whole length) while columns are chosen
        reserve = min(max(len(n) for n in full), max(_NAME_MIN, limit // 3))
        narrow = [_elide(n, reserve) for n in full]
        for c in order:
            trial = [m for m in metric_cols if m in chosen or m == c]
            if _width(console, _table(result, rows, trial, narrow)) <= limit:
                chosen.append(c)
        shown = [c for c in metric_cols if c in chosen]
        hidden = [c for c in metric_cols if c not in chosen]
        base = _width(console, _table(result, rows, shown, ["" for _ in rows]))
        room = max(_NAME_MIN, limit - base, len("arch"))
        names, ids = short_names(full, room)
        table = _table(result, rows, shown, names)
    console.print(table)
    if ids:
        for name, row in zip(names, rows):
            console.print(Text(f"{name} = {row['arch']}", style="dim"), soft_wrap=not fit)
    if hidden:
        console.print(Text(f"not shown at this width: {', '.join(hidden)} (--wide shows every column; "
                           f"--json{' or ' + str(out) if out else ''} holds them all)", style="dim"), soft_wrap=not fit)
    for row in rows:
        if row.get("reason"):
            console.print(Text(f"{row['rank']}. {row['arch']}: {row['reason']}", style="dim"), soft_wrap=not fit)
    saved = f"; results in {out}" if out else ""
    err_console.print(f"[dim]{result.computed} computed, {result.resumed} resumed{saved}[/]")
