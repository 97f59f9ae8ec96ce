"""Rich rendering of reports (stdout). Presentation only: no computation here."""

from __future__ import annotations

from rich import box
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from zsad_cli.app import out_console

STATUS_STYLE = {"good": "bold green", "unknown": "bold cyan", "warning": "bold yellow", "bad": "bold red"}


def fmt(value, spread=None, digits=4) -> str:
    if value is None:
        return "—"
    text = f"{value:.{digits}g}"
    return f"{text} ± {spread:.2g}" if spread is not None else text


def _bar(value, top: float, width: int = 24) -> Text:
    if value is None or top <= 0:
        return Text("")
    n = max(1, round(width * min(value, top) / top))
    return Text("█" * n, style="cyan")


def render_score(doc: dict) -> None:
    nlc = doc["nlc"]
    verdict = doc["verdict"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("parameters", f"{doc['params']:,}")
    if doc.get("init"):
        head.add_row("initialization", doc["init"]["summary"])
    per_seed = ", ".join(fmt(v, digits=4) for v in nlc["per_seed"])
    nlc_text = fmt(nlc["mean"], nlc["std"]) if nlc["mean"] is not None else f"undefined ({nlc['reason']})"
    head.add_row("NLC", f"{nlc_text}   [dim](per seed: {per_seed})[/]")
    spec = doc.get("spectrum")
    if spec and spec.get("sigma2_mean") is not None:
        sd = spec["std"]
        a, b = spec["between"]
        head.add_row("Jacobian", f"[dim]{a} → {b} ({spec['method']}, {spec['samples']} inputs)[/]")
        head.add_row("  mean σ²", f"{fmt(spec['sigma2_mean'], sd['sigma2_mean'])}   "
                                  f"[dim]var/mean² {fmt(spec['sigma2_ratio'], digits=3)}[/]")
        # below what the method resolves, σ_min is a bound ("< value") and the condition one too ("> value")
        below = "< " if spec.get("sigma_min_is_bound") and spec["sigma_min"] is not None else ""
        above = "> " if spec.get("condition_is_bound") and spec["condition"] is not None else ""
        condition = (fmt(spec["condition"], digits=3) if spec["condition"] is not None or "condition_reason" not in spec
                     else "∞ (singular)")
        head.add_row("  σ max / min", f"{fmt(spec['sigma_max'], digits=3)} / {below}{fmt(spec['sigma_min'], digits=3)}"
                                      f"   [dim]condition {above}{condition}[/]")
        head.add_row("  isometric", f"{100 * spec['isometry_share']:.0f}% of σ within a factor 2 of 1")
        if spec.get("plot"):
            head.add_row("  plot", spec["plot"])
    mf = doc.get("meanfield")
    if mf and mf.get("chi1") is not None:
        head.add_row("mean field", f"χ₁ = {fmt(mf['chi1'], digits=4)} ({mf['phase']}), q* = {fmt(mf['q_star'], digits=4)}, "
                                   f"ξ_c = {fmt(mf['xi_c'], digits=3)}")
        head.add_row("  NLC predicted", f"{fmt(mf['nlc_predicted'], digits=4)} (infinite width) vs measured "
                                        f"{fmt(nlc['mean'], nlc['std'])}")
    elif mf and mf.get("reason"):
        head.add_row("mean field", f"[dim]{mf['reason']}[/]")
    style = STATUS_STYLE[verdict["status"]]
    head.add_row("verdict", Text(verdict["summary"], style=style))
    for reason in verdict["reasons"][1:]:
        head.add_row("", Text(f"• {reason}", style="dim"))
    options = doc["options"]
    subtitle = (f"{options['seeds']} seeds · batch {options['batch']} · {options['tangents']} tangents · "
                f"{doc['dtype']} · {doc['seconds']:.2f} s")
    out_console.print(Panel(head, title=f"[bold]{doc['name']}[/]", subtitle=subtitle, box=box.ROUNDED))

    table = Table(title="NLC profile (input → output of each layer)", box=box.SIMPLE_HEAD)
    table.add_column("layer")
    table.add_column("NLC", justify="right")
    table.add_column("")
    top = max([row["nlc"] for row in doc["profile"] if row["nlc"] is not None] or [1.0])
    for row in doc["profile"]:
        table.add_row(row["layer"], fmt(row["nlc"], row["nlc_std"]), _bar(row["nlc"], top))
    out_console.print(table)
