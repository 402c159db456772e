"""What every figure of ``make plots`` and ``make eval`` shares: the headless matplotlib backend
(Agg: no display on cluster nodes), one axis style (labels, title, grid, small legend) and how a
figure is titled, laid out and written (PNG, 120 dpi)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["finish", "plt", "style"]


def style(ax, xlabel: str, ylabel: str, title: str, log: bool = False) -> None:
    """Labels, title, grid and legend of one panel (``log``: log-scale y axis)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def finish(fig, path: Path, title: str | None) -> None:
    """Title the figure (``None``: its single panel's title is enough), lay it out, write ``path``
    and free it."""
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
