"""``zsad rank``: score every architecture of a search space and rank them."""

from __future__ import annotations

import click
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from zsad.ranking import short_formula
from zsad.verdict import HEALTHY_MAX, LINEAR_MAX
from zsad_cli.app import cli, emit_json, err_console, fail, handle_errors, out_console, x64_option
from zsad_cli.render import fmt

_BAND = f"[{LINEAR_MAX:g}, {HEALTHY_MAX:g}]"

METRICS_HELP = (
    f"Comma-separated metrics, or 'all' (default): nlc (band: best inside {_BAND}; also nlc_std and nlc_block, "
    "lower is better), sigma2 (near 1: mean squared Jacobian singular value of the hidden layers), params (higher), "
    "flops (higher), naswot (higher), synflow (higher, log), grad_norm (higher, log), snip (higher, log), "
    "jacob_cov (higher).")
BY_HELP = (
    f"Rank by 'score' (default: {short_formula()}; see benchmarks/RESULTS_SCORE.md), by one "
    "metric column (its direction), or by several comma-separated (mean of per-metric ranks).")


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
@click.option("--by", default="score", show_default=True, help=BY_HELP)
@click.option("--top", default=10, show_default=True, type=click.IntRange(1), help="Rows of the ranked table.")
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
def rank(space_file, out, resume, overwrite, metrics, by, top, seeds, batch, tangents, seed, as_json,
         ray_address, workers, devices):
    """Score every architecture of the search space in SPACE_FILE and rank them (1 = best)."""
    from zsad._errors import SpecError
    from zsad.rank import RankInterrupted, RankOptions, parse_metrics, rank_space
    from zsad.space import load_space

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
        _interrupted(stop, space_file, out)
    finally:
        if runner is not None:
            runner.close()
    if as_json:
        emit_json({"meta": result.meta, "rows": result.top(top)}, None, True)
    else:
        _render(result, top, out)


class _progress:
    """A rich progress bar on stderr (archs/s, ETA); yields ``advance(done, total)``."""

    def __init__(self, total):
        self.bar = Progress(TextColumn("[bold]ranking"), BarColumn(), MofNCompleteColumn(), _Rate(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=True)
        self.task = self.bar.add_task("rank", total=total)
        self.first = None

    def __enter__(self):
        self.bar.start()

        def advance(done, total):
            if self.first is None:  # resumed rows do not count towards the rate
                self.first = done
                self.bar.reset(self.task, total=total, completed=done)
            self.bar.update(self.task, completed=done, total=total)

        return advance

    def __exit__(self, *exc):
        self.bar.stop()
        return False


def _interrupted(stop, space_file, out) -> None:
    if out:
        fail(f"interrupted after {stop.done} architecture(s); every finished row is in {out}. "
             f"Continue with: zsad rank {space_file} --out {out} --resume (same options)", 130)
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


def _render(result, top: int, out: str | None) -> None:
    metric_cols = [c for c in result.columns if c not in ("arch", "status", "reason", "score", "rank", "nlc_std")]
    table = Table(box=box.SIMPLE_HEAD, title=f"top {min(top, len(result.rows))} of {len(result.rows)} "
                                             f"(by {', '.join(result.by)}; rank 1 = best)")
    table.add_column("rank", justify="right")
    table.add_column("arch", no_wrap=True)
    for c in metric_cols:
        table.add_column(c, justify="right", no_wrap=True)
    table.add_column("score", justify="right")
    table.add_column("status", no_wrap=True)
    notes = []
    for row in result.top(top):
        cells = [fmt(row["nlc"], row.get("nlc_std"), digits=3) if c == "nlc" else _num(row[c], c)
                 for c in metric_cols]
        table.add_row(str(row["rank"]), Text(row["arch"]), *cells, _num(row["score"], "score"),
                      Text(row["status"], style="green" if row["status"] == "ok" else "red"))
        if row.get("reason"):
            notes.append(f"{row['rank']}. {row['arch']}: {row['reason']}")
    console = out_console
    if not console.is_terminal:  # a file or a pipe: as wide as the table, never truncated
        width = Measurement.get(console, console.options.update_width(1000), table).maximum
        console = Console(highlight=False, width=max(width, console.width))
    console.print(table)
    for note in notes:
        console.print(Text(note, style="dim"), soft_wrap=True)
    saved = f"; results in {out}" if out else ""
    err_console.print(f"[dim]{result.computed} computed, {result.resumed} resumed{saved}[/]")
