"""Shared plotting set-up: the Agg backend (files only, no display), seaborn style, atomic saves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # PNG files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def save(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG via a temporary file (never a half-written image) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path


__all__ = ["plt", "save", "sns"]
