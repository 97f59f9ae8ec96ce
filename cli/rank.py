"""``zsad rank``: score every architecture of a search space and rank them."""

from __future__ import annotations

import shlex

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from zsad.verdict import HEALTHY_MAX, LINEAR_MAX
from zsad_cli.app import cli, emit_json, err_console, fail, handle_errors, x64_option
from zsad_cli.render import render_rank

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
    from zsad.rank import RankInterrupted, check_run, rank_space
    from zsad.ranking import RankOptions, parse_metrics
    from zsad.space import load_space

    check_run(out, resume=resume, overwrite=overwrite, ray=ray_address, workers=workers, devices=devices)
    space = load_space(space_file)
    options = RankOptions(seeds=seeds, batch=batch, tangents=tangents, seed=seed, metrics=parse_metrics(metrics))
    try:
        with _progress(space.size) as advance:
            result = rank_space(space, options, out=out, resume=resume, overwrite=overwrite, by=by,
                                on_progress=advance, ray=ray_address, workers=workers, devices=devices)
    except RankInterrupted as stop:
        _interrupted(stop, out)
    if as_json:
        emit_json({"meta": result.meta, "rows": result.top(top)}, None, True)
    else:
        render_rank(result, top, out, wide)


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


