"""Pareto plots of a benchmark sweep: accuracy against measured LLM-prefill speedup and against LLM FLOPs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

from matplotlib import pyplot as plt  # noqa: E402

MARKERS = "os^vDPXh<>"  # with colour, so that lines stay apart in print and for colour-blind readers


def _lines(rows: list[dict]) -> dict[str, list[dict]]:
    """Measured rows per compression method, sorted by keep (the uncompressed row apart)."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        if row["method"] != "none" and row.get("error") is None:
            out.setdefault(row["method"], []).append(row)
    return {method: sorted(group, key=lambda r: r["keep"] or r["realised_keep"]) for method, group in out.items()}


def _panel(ax, rows: list[dict], x: str, label: str, scale: float = 1.0) -> None:
    baseline = next((r for r in rows if r["method"] == "none"), None)
    for index, (method, group) in enumerate(_lines(rows).items()):
        points = [(r[x] / scale, r["accuracy"], _keep(r)) for r in group if None not in (r[x], r["accuracy"])]
        if points:
            xs, ys, _ = zip(*points, strict=True)
            style = {"marker": MARKERS[index % len(MARKERS)], "color": f"C{index % 10}"}
            (line,) = ax.plot(xs, ys, label=method, **style)
            for px, py, keep in points:
                ax.annotate(
                    keep,
                    (px, py),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=line.get_color(),
                )
    if baseline is not None and baseline[x] is not None and baseline["accuracy"] is not None:
        ax.plot(
            [baseline[x] / scale],
            [baseline["accuracy"]],
            marker="*",
            markersize=16,
            color="black",
            linestyle="none",
            label="uncompressed",
            zorder=5,
        )
    if not any(r["accuracy"] is not None for r in rows):
        ax.text(0.5, 0.5, "no accuracy: timing-only model", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)


def pareto_figure(rows: list[dict], title: str = ""):
    """Two panels: accuracy vs measured LLM-prefill speedup, and accuracy vs LLM prefill FLOPs; one line per
    method across its keeps (labelled), the uncompressed model a black star."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    _panel(left, rows, "speedup_llm_prefill", "measured LLM-prefill speedup (x, vs uncompressed)")
    _panel(right, rows, "flops_llm", "LLM prefill GFLOPs (analytic)", scale=1e9)
    handles, labels = left.get_legend_handles_labels()
    if not handles:
        handles, labels = right.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    return fig


def write_pareto(rows: list[dict], path, title: str = "") -> None:
    fig = pareto_figure(rows, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _keep(row: dict) -> str:
    """The point's label: the keep asked for, or the measured one (~) for methods whose budget follows the input."""
    return f"{row['keep']:g}" if row["keep"] is not None else f"~{row['realised_keep']:.2f}"
