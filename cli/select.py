"""``zsad select``: the best candidate at each position of a search space, fairly, without training."""

from __future__ import annotations

import click

from zsad_cli.app import cli, emit_json, err_console, handle_errors, x64_option
from zsad_cli.render import render_selection


@cli.command()
@click.argument("space_file", type=click.Path(dir_okay=False))
@click.option("--samples", type=click.IntRange(1), default=None,
              help="Sampled architectures (default: the fewest for which every candidate of every position is "
                   "expected 30 times, 30 x the most candidates of a position; fewer are refused).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sample, the initializations and "
                                                                     "the bootstrap.")
@click.option("--no-fair", "no_fair", is_flag=True,
              help="Compare the candidates as they are only (default: with fair initialization, each activation "
                   "candidate's feeding layer at the edge of chaos, and without it).")
@click.option("--seeds", default=2, show_default=True, type=click.IntRange(1), help="Initializations per architecture.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(2), help="Samples in the scoring batch.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the selection as JSON to this file.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Heatmap of the marginal effects (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the selection as JSON on stdout.")
@x64_option
@handle_errors
def select(space_file, samples, seed, no_fair, seeds, batch, out, plot, as_json):
    """Choose the candidate at each position of the search space in SPACE_FILE (a base + choices space or
    NAS-Bench-201) by its marginal effect on the default score over a seeded uniform sample."""
    from zsad.select import SelectOptions, select as run_select
    from zsad.select_space import load_select_space

    space = load_select_space(space_file)
    options = SelectOptions(samples=samples, seed=seed, fair=not no_fair, seeds=seeds, batch=batch)
    with _Progress() as progress:
        result = run_select(space, options, on_progress=progress)
    doc = result.to_json()
    if plot:
        doc["plot"] = plot_selection(doc, plot)
    emit_json(doc, out, as_json)
    if not as_json:
        render_selection(doc)
        if out:
            err_console.print(f"[dim]selection in {out}[/]")


class _Progress:
    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=True)
        self.tasks = {}
        self.bar.start()
        return self

    def __call__(self, label, done, total):
        if label not in self.tasks:
            self.tasks[label] = self.bar.add_task(f"scoring ({label})", total=total)
        self.bar.update(self.tasks[label], completed=done, total=total)

    def __exit__(self, *exc):
        self.bar.stop()
        return False


def plot_selection(doc: dict, path: str) -> str:
    """Heatmap (positions x candidates) of the marginal effect on the default score; the selected cells framed."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    positions = doc["positions"]
    width = max(len(p["candidates"]) for p in positions)
    grid = np.full((len(positions), width), np.nan)
    for r, pos in enumerate(positions):
        for c, cand in enumerate(pos["candidates"]):
            if cand["marginal"] is not None:
                grid[r, c] = cand["marginal"]
    top = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    fig = Figure(figsize=(1.6 + 1.9 * width, 0.9 + 0.6 * len(positions)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="RdBu", norm=TwoSlopeNorm(0.0, -top or -1.0, top or 1.0), aspect="auto")
    for r, pos in enumerate(positions):
        for c, cand in enumerate(pos["candidates"]):
            label = cand["choice"] if len(cand["choice"]) <= 14 else cand["choice"][:13] + "…"
            value = "—" if cand["marginal"] is None else f"{cand['marginal']:+.2f}"
            ax.text(c, r, f"{label}\n{value}", ha="center", va="center", fontsize=7)
            if cand["selected"]:
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
    ax.set_yticks(range(len(positions)), [p["name"] for p in positions], fontsize=8)
    ax.set_xticks(range(width), [f"candidate {i + 1}" for i in range(width)], fontsize=8)
    fig.colorbar(im, ax=ax, label="marginal effect (score)")
    ax.set_title(f"{doc['space']['name']}: {'fair initialization' if doc['options']['fair'] else 'as is'}, "
                 f"{doc['options']['samples']} architectures (framed: selected)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)
