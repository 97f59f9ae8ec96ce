"""``zsad normalize``: shape the activations so that the network's NLC equals a target."""

from __future__ import annotations

from pathlib import Path

import click

from zsad_cli.app import EXIT_FAILURE, cli, emit_json, err_console, fail, handle_errors, out_console, x64_option
from zsad_cli.render import fmt, render_normalize


@cli.command()
@click.argument("arch_file", required=False, type=click.Path(dir_okay=False))
@click.option("--target", required=True, type=float, help="Target NLC (>= 1).")
@click.option("--method", type=click.Choice(["interp", "scale"]), default="interp", show_default=True,
              help="interp: a·φ(s) + (1−a)·s (any activation; a > 1 raises the nonlinearity); "
                   "scale: φ(b·s)/b (smooth activations; b > 1 raises it).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Normalized file (default: NAME-normalized.yaml "
              "beside the input).")
@click.option("--space", "space_file", type=click.Path(dir_okay=False),
              help="Normalize every architecture of this search-space file (written as an 'archs:' list).")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1), help="Random initializations.")
@click.option("--batch", default=256, show_default=True, type=click.IntRange(2), help="Samples in the scoring batch.")
@click.option("--tol", default=0.02, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Relative tolerance on the mean NLC.")
@click.option("--max-iter", default=20, show_default=True, type=click.IntRange(1), help="Most measured evaluations.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@x64_option
@handle_errors
def normalize(arch_file, target, method, out, space_file, seeds, batch, tol, max_iter, as_json):
    """Solve for one shaping scalar per activation layer of ARCH_FILE so that its NLC equals --target."""
    import zsad
    from zsad import normalize as zn
    from zsad.arch.files import save_architecture

    if (arch_file is None) == (space_file is None):
        raise zsad.ZsadError("expected either ARCH_FILE or --space SPACE_FILE (one of them)")
    options = dict(method=method, seeds=seeds, batch=batch, tol=tol, max_iter=max_iter)
    if space_file:
        return _normalize_space(space_file, target, out, options, as_json)
    from zsad._files import check_writable

    arch = zsad.load_architecture(arch_file)
    out = out or str(Path(arch_file).with_name(f"{Path(arch_file).stem}-normalized.yaml"))
    check_writable(out, "--out")  # before the work, not after it
    with err_console.status(f"normalizing {arch.name} to NLC {target:g} ({method})…"):
        result = zn.normalize(arch, target, **options)
    save_architecture(result.arch, out)
    doc = {**result.to_json(), "output": out}
    emit_json(doc, None, as_json)
    if not as_json:
        render_normalize(doc)
    if not result.converged:
        fail(f"{arch.name}: NLC {result.nlc_after[0]:.4g} is not within {tol:g} of {target:g} after {max_iter} "
             f"evaluations (closest written to {out})", EXIT_FAILURE)


def _normalize_space(space_file, target, out, options, as_json) -> None:
    from zsad import normalize as zn
    from zsad.arch.files import save_space
    from zsad.space import load_space

    from zsad._files import check_writable

    space = load_space(space_file)
    out = out or str(Path(space_file).with_name(f"{Path(space_file).stem}-normalized.yaml"))
    check_writable(out, "--out")
    rows, archs = [], []
    for i, (arch_id, result, error) in enumerate(zn.normalize_space(space, target, **options), 1):
        err_console.print(f"[dim]{i}/{space.size or '?'}[/] {arch_id}: "
                          + (f"[red]{error}[/]" if error else f"NLC {fmt(result.nlc_before[0])} → "
                             f"{fmt(result.nlc_after[0])} ({result.iterations} iterations, {result.seconds:.1f} s)"))
        rows.append({"arch": arch_id, "error": error, **(result.to_json() if result else {})})
        if result is not None and result.converged:
            archs.append(result.arch)
    if archs:
        save_space(archs, out, f"{space.name}-normalized")
    emit_json({"space": space.name, "target": target, "output": out if archs else None, "archs": rows},
              None, as_json)
    if not as_json:
        out_console.print(f"wrote {len(archs)} of {len(rows)} architectures to [bold]{out}[/]" if archs
                          else "no architecture could be normalized")
    if len(archs) < len(rows):
        fail(f"{len(rows) - len(archs)} of {len(rows)} architectures could not be normalized to {target:g}",
             EXIT_FAILURE)


