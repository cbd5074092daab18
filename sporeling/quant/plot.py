"""The picture of a mixed-bit search: every allocation it measured, file size against output agreement.

Each point is one allocation the search ran on its sample inputs (the uniform references at about 8 and 6 bits,
the bisection of the price of a byte, the refinement steps), placed at its predicted whole-file size; the
chosen one is ringed, the target cosine (or the target size) is a dashed line. Drawn with matplotlib,
the `[plot]` extra, written atomically.
"""

from __future__ import annotations

import io

from ..errors import SporelingError
from ..frontends._extras import import_extra
from ..tools import atomic_write


def plot_curve(report: dict, path: str) -> None:
    import_extra("matplotlib", "plot", "compress --plot", SporelingError)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    curve = report.get("curve") or []
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for kind, marker, color in (("uniform", "s", "tab:orange"), ("", "o", "tab:blue")):
        pts = [p for p in curve if p["what"].startswith("uniform") == bool(kind)]
        if pts:
            ax.scatter([p["file_bytes"] / 1e6 for p in pts], [p["agreement"] for p in pts], marker=marker,
                       color=color, label="uniform levels" if kind else "mixed allocations", zorder=3)
    for p in curve:
        if p["what"].startswith("uniform"):
            ax.annotate(p["what"].split(" (")[0], (p["file_bytes"] / 1e6, p["agreement"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
    chosen = [p for p in curve if p["chosen"]]
    if chosen:
        ax.scatter([chosen[0]["file_bytes"] / 1e6], [chosen[0]["agreement"]], s=160, facecolors="none",
                   edgecolors="tab:red", linewidths=2, label="chosen", zorder=4)
    ax.axhline(report.get("target_cosine", 0.995), color="gray", linestyle="--", linewidth=1, label="target cosine")
    ax.axvline(report["float_bytes"] / 1e6, color="black", linestyle=":", linewidth=1, label="float model")
    ax.set_xlabel("file size (MB, predicted from the codes' entropy)")
    ax.set_ylabel("worst output agreement with float")
    values = [p["agreement"] for p in curve] or [1.0]
    floor = min(min(values), report.get("target_cosine", 0.995))
    ax.set_ylim(max(floor - 0.1 * (1.0 - floor) - 1e-4, 0.0), 1.0 + 0.02 * (1.0 - floor) + 1e-5)
    ax.set_title(f"{report['source'].rsplit('/', 1)[-1]}: {report['ratio']:.2f}x, {len(curve)} allocations measured",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))
