"""``zsad phase``: the edge of chaos of an activation, as a table and a phase diagram."""

from __future__ import annotations

import click
from rich import box
from rich.table import Table

from zsad_cli.app import cli, emit_json, err_console, handle_errors, out_console, x64_option


def render_phase(doc: dict) -> None:
    params = ", ".join(f"{k}={v:g}" for k, v in doc["params"].items())
    table = Table(title=f"edge of chaos of {doc['activation']}{f' ({params})' if params else ''}: "
                        "χ₁(q*) = 1", box=box.SIMPLE_HEAD)
    for name in ("σ_b²", "critical σ_w²", "critical σ_w", "q*"):
        table.add_column(name, justify="right")
    for row in doc["edge_of_chaos"]:
        w = row["weight_var"]
        table.add_row(f"{row['bias_var']:.4g}", "—" if w is None else f"{w:.6f}", "—" if w is None else f"{w**0.5:.6f}",
                      _q_text(row))
    out_console.print(table)
    net = doc.get("network")
    if net:
        chi = "—" if net["chi1"] is None else f"{net['chi1']:.4g}"
        out_console.print(f"[bold]{net['name']}[/]: hidden layer {net['activation']} at σ_w² = {net['weight_var']:.4g}, "
                          f"σ_b² = {net['bias_var']:.4g}: χ₁ = {chi} ([bold]{net['phase']}[/])")
    if doc.get("plot"):
        out_console.print(f"phase diagram written to {doc['plot']}")


def _q_text(row: dict) -> str:
    if row["q_star"] is not None:
        return f"{row['q_star']:.4g}"
    reason = row.get("reason", "")
    return "∞ (diverges)" if "grows without bound" in reason else "any q" if "every q" in reason else "—"


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
