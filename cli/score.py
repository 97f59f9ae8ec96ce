"""``zsad score``: every metric of one architecture, with a verdict."""

from __future__ import annotations

import click

from zsad_cli.app import EXIT_FAILURE, cli, emit_json, err_console, fail, handle_errors, x64_option
from zsad_cli.render import render_score


@cli.command()
@click.argument("arch_file", type=click.Path(dir_okay=False))
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1), help="Random initializations.")
@click.option("--batch", default=256, show_default=True, type=click.IntRange(2), help="Samples in the scoring batch.")
@click.option("--tangents", default=2, show_default=True, type=click.IntRange(1),
              help="Tangent vectors (permutations) per sample in the NLC estimator.")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed of the initializations.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the JSON document here.")
@click.option("--spectrum/--no-spectrum", default=True, show_default=True, help="Jacobian singular-value spectrum.")
@click.option("--between", nargs=2, metavar="A B", default=None,
              help="Jacobian from the output of layer A to the output of layer B (names, indices, input, output). "
                   "Default: the hidden part, first dense/conv output to last dense/conv input.")
@click.option("--spectrum-method", type=click.Choice(["auto", "exact", "lanczos"]), default="auto",
              show_default=True, help="Exact SVD of the materialized Jacobian, or matrix-free Lanczos.")
@click.option("--spectrum-samples", default=8, show_default=True, type=click.IntRange(1),
              help="Inputs at which the Jacobian is evaluated.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the singular-value density to this PNG.")
@click.option("--meanfield/--no-meanfield", default=True, show_default=True,
              help="Mean-field section: fixed point, chi1, phase, depth scales, NLC predicted at infinite width.")
@x64_option
@handle_errors
def score(arch_file, seeds, batch, tangents, seed, as_json, out, spectrum, between, spectrum_method,
          spectrum_samples, plot, meanfield):
    """All metrics of the architecture in ARCH_FILE, with a plain-language verdict."""
    import zsad

    from zsad._files import check_writable
    from zsad.cell_file import load_scorable

    for path, option in ((out, "--out"), (plot, "--plot")):  # before any work, not after it
        if path:
            check_writable(path, option)
    arch = load_scorable(arch_file)
    options = zsad.ScoreOptions(seeds=seeds, batch=batch, tangents=tangents, seed=seed, spectrum=spectrum or bool(plot),
                                between=tuple(between) if between else None, spectrum_method=spectrum_method,
                                spectrum_samples=spectrum_samples, meanfield=meanfield)
    with err_console.status(f"scoring {arch.name} over {seeds} initializations…"):
        report = zsad.score_architecture(arch, options)
    doc = report.to_json()
    unwritten = []  # a write that still fails: the report goes to stdout all the same, then one line
    if plot:
        try:
            doc["spectrum"]["plot"] = str(zsad.plot_score_spectrum(report, plot))
        except OSError as err:
            unwritten.append(f"{plot}: --plot: could not write the plot ({err.strerror or err})")
    if out:
        try:
            emit_json(doc, out, False)
        except OSError as err:
            unwritten.append(f"{out}: --out: could not write the report ({err.strerror or err}); it is on stdout")
    if as_json:
        emit_json(doc, None, True)
    else:
        render_score(doc)
    if unwritten:
        fail("; ".join(unwritten), EXIT_FAILURE)
