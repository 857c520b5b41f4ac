"""Plots Stratos writes for people: the Pareto front of server selection."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402


def plot_front(selection, path: Path) -> Path:
    """Cost vs latency of feasible servers, coloured by hardware; the front ringed, the choice starred."""
    s = selection.servers
    feasible = s[s["feasible"]]
    front = s[s["id"].isin(selection.front)]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    if not feasible.empty:
        points = ax.scatter(
            feasible["cost_per_hour"],
            feasible["latency_ms"],
            c=feasible["hardware"],
            cmap="viridis",
            s=12,
            alpha=0.5,
            label="feasible servers",
        )
        fig.colorbar(points, ax=ax, label="hardware (TFLOPS or GB)")
        ax.scatter(
            front["cost_per_hour"],
            front["latency_ms"],
            facecolors="none",
            edgecolors="black",
            s=60,
            linewidths=1.0,
            label="Pareto front",
        )
    if selection.chosen:
        row = selection.row(selection.chosen)
        ax.scatter(
            [row.cost_per_hour],
            [row.latency_ms],
            marker="*",
            s=320,
            c="red",
            edgecolors="black",
            label=f"chosen: {selection.chosen}",
            zorder=5,
        )
    ax.set_xscale("log")
    ax.set_xlabel("cost ($/hour, log scale)")
    ax.set_ylabel("network round trip to the user (ms)")
    ax.set_title(
        f"Server selection ({selection.method}): {len(front)} non-dominated of {len(feasible)} feasible"
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)  # atomic: never a half-written plot
    return path
