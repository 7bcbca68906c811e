"""What the cost benchmark writes: the machine line, Markdown tables and pivots, the issue's
targets, the plot and the CSV / Markdown / PNG files."""

from __future__ import annotations

import platform
from pathlib import Path

import pandas as pd
import torch

def machine_description(device: str) -> dict[str, str]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": str(torch.get_num_threads())}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
    else:
        info["device"] = _cpu_model()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def to_markdown(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for col, fmt in (("fwd", "{:g}"), ("bwd", "{:g}"), ("task_grads", "{:.0f}"), ("time_ms", "{:.2f}"),
                     ("uniform_ms", "{:.2f}"), ("time_ratio", "{:.3f}"), ("time_ratio_iqr", "{:.3f}"),
                     ("peak_mb", "{:.1f}"), ("mem_ratio", "{:.3f}"), ("balancer_passes_ms", "{:.2f}"),
                     ("overhead_ms", "{:.3f}"),
                     ("overhead_pct", "{:.2f}")):
        shown[col] = [("" if pd.isna(x) else fmt.format(x)) for x in shown[col]]
    return shown.to_markdown(index=False)


def pivots(frame: pd.DataFrame) -> str:
    """Markdown: passes per method, then time ratio, memory ratio and own overhead (% of the uniform
    step) as method x K tables (``skip`` where an O(K) method was not measured)."""
    measured = frame[frame["note"].isna() | (frame["note"] == "")]
    methods = list(dict.fromkeys(frame["method"]))
    passes = measured.groupby("method", sort=False)[["fwd", "bwd"]].first()
    passes["task_grads"] = measured.groupby("method", sort=False)["task_grads"].max().map(
        lambda n: "K" if n > 0 else "0")
    parts = ["model passes per training step (fwd / bwd traversals / per-task gradients):\n\n"
             + passes.reindex(methods).to_markdown()]
    for col, title, fmt in (("time_ratio", "step time / uniform step time", "{:.3f}"),
                            ("mem_ratio", "peak memory / uniform peak memory", "{:.3f}"),
                            ("overhead_pct", "balancer's own arithmetic, % of the uniform step", "{:.2f}")):
        table = frame.pivot(index="method", columns="K", values=col).reindex(methods)
        table = table.apply(lambda c: c.map(lambda x: "skip" if pd.isna(x) else fmt.format(x)))
        table.columns = [f"K={k}" for k in table.columns]
        parts.append(f"{title}:\n\n" + table.to_markdown())
    return "\n\n".join(parts)


_O1 = ("famo[same_batch]", "famo[lagged]", "marigold[fused]", "marigold[faithful]")
#: the issue's targets for the O(1) balancers, ratios to uniform: (method, column, bound, which K)
TARGETS = [
    ("famo[lagged]", "time_ratio", 1.02, "all"), ("famo[same_batch]", "time_ratio", 1.30, "all"),
    ("marigold[fused]", "time_ratio", 1.30, "all"), ("marigold[faithful]", "time_ratio", 2.1, "all"),
    *[(m, "mem_ratio", 1.05, "max") for m in _O1],
    *[(m, "overhead_pct", 1.0, "max") for m in _O1],  # percent of the uniform step, strict
]


def check_targets(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per target: the worst measured value (over all K, or at the largest K) and met or not."""
    rows = []
    k_max = frame["K"].max()
    for method, col, bound, which in TARGETS:
        data = frame[(frame["method"] == method) & frame[col].notna()]
        if which == "max":
            data = data[data["K"] == k_max]
        if data.empty:
            continue
        worst = data.loc[data[col].idxmax()]
        pct = col == "overhead_pct"
        rows.append({"method": method, "quantity": col, "target": f"< {bound}%" if pct else f"<= {bound}",
                     "K": "all" if which == "all" else int(k_max), "worst": round(float(worst[col]), 3),
                     "at K": int(worst["K"]), "met": bool(worst[col] < bound if pct else worst[col] <= bound)})
    return pd.DataFrame(rows)


def plot(frame: pd.DataFrame, path: Path) -> Path:
    """Log-log plot of the time ratio to uniform against K, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = frame[frame["method"] != "uniform"].dropna(subset=["time_ratio"])
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.get_cmap("tab20").colors
    markers = "os^vD<>pPX*h"
    for i, (method, group) in enumerate(data.groupby("method", sort=False)):
        group = group.sort_values("K")
        o_k = bool((group["task_grads"] > 0).any())
        color = colors[(2 * i) % 20 + (i // 10) % 2]
        ax.plot(group["K"], group["time_ratio"], marker=markers[i % len(markers)], color=color,
                linestyle="--" if o_k else "-", label=method + (" (O(K))" if o_k else ""))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of tasks K")
    ax.set_ylabel("step time / uniform-loss step time")
    model, device = frame["model"].iloc[0], frame["device"].iloc[0]
    ax.set_title(f"balancer step cost vs K ({model}, {device})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(frame: pd.DataFrame, out: Path, header: str = "") -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"cost_{frame['model'].iloc[0]}_{frame['device'].iloc[0]}"
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    frame.to_csv(paths["csv"], index=False)
    targets = check_targets(frame)
    text = [header] if header else []
    text += [pivots(frame)]
    if not targets.empty:
        text += ["targets (issue 7):\n\n" + targets.to_markdown(index=False)]
    text += ["all columns:\n\n" + to_markdown(frame)]
    paths["md"].write_text("\n\n".join(text) + "\n")
    plot(frame, paths["png"])
    return paths
