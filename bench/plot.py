"""The PNG of case 5: end-to-end cost against output size, for the sweeps over N and over C."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_scaling(points: list[dict[str, Any]], path: Path) -> None:
    """Log-log cost against output entries, one panel per swept axis, with a slope-1 guide."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for axis_name, panel in zip(("N", "C"), axes, strict=True):
        line = [p for p in points if p["axis"] == axis_name]
        entries = [p["output_entries"] for p in line]
        for fmt, marker in (("json", "o"), ("npz", "s")):
            panel.loglog(entries, [p[f"{fmt}_seconds"] for p in line], marker=marker, label=fmt)
        if entries:
            top = line[-1]
            guide = [top["json_seconds"] * e / entries[-1] for e in entries]
            panel.loglog(entries, guide, "k:", label="linear (slope 1)")
            fixed = "C" if axis_name == "N" else "N"
            panel.set_title(f"cost against {axis_name} ({fixed} = {top[fixed]})")
        panel.set_xlabel("output size (float64 numbers in the response)")
        panel.grid(True, which="both", alpha=0.3)
        panel.legend()
    axes[0].set_ylabel("end-to-end seconds (median)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
