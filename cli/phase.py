"""``zsad phase``: the edge of chaos of an activation, as a table and a phase diagram."""

from __future__ import annotations

import click

from zsad_cli.app import cli, emit_json, err_console, handle_errors, x64_option
from zsad_cli.render import render_phase


@cli.command()
@click.option("--activation", "activation", default=None, help="Activation name (default: that of --arch).")
@click.option("--bias-var-max", default=0.5, show_default=True, type=float, help="Largest σ_b² of the table and plot.")
@click.option("--weight-var-max", default=None, type=float, help="Right end of the plot's σ_w² axis (default: auto).")
@click.option("--rows", default=11, show_default=True, type=click.IntRange(1, 1001), help="σ_b² values in the table.")
@click.option("--arch", "arch_file", type=click.Path(dir_okay=False), help="Mark this network's hidden layer.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the phase diagram to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@x64_option
@handle_errors
def phase(activation, bias_var_max, weight_var_max, rows, arch_file, plot, as_json):
    """Critical σ_w² (edge of chaos, χ₁ = 1) for a grid of σ_b², and the order/chaos phase diagram."""
    import zsad
    from zsad.meanfield_arch import phase_diagram
    from zsad.plotting import plot_phase_diagram

    arch = zsad.load_architecture(arch_file) if arch_file else None
    with err_console.status("solving for the edge of chaos…"):
        result = phase_diagram(activation, arch=arch, bias_var_max=bias_var_max, rows=rows,
                               weight_var_max=weight_var_max, grid=(120, 80) if plot else None)
    doc = result.to_json()
    if plot:
        net = result.network
        point = {"weight_var": net["weight_var"], "bias_var": net["bias_var"], "label": net["name"],
                 "phase": net["phase"]} if net else None
        edge = ([r["bias_var"] for r in result.edge], [r["weight_var"] or float("nan") for r in result.edge])
        doc["plot"] = str(plot_phase_diagram(plot, result.weight_vars, result.bias_vars, result.chi1, edge=edge,
                                             point=point, activation=result.activation))
    emit_json(doc, None, as_json)
    if not as_json:
        render_phase(doc)
