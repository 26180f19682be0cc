"""PNG charts of a forecast: history, mean forecast, 80% and 95% bands, threshold (matplotlib, Agg)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from scaleops.core.settings import SeriesSettings
from tasks.capacity.models import (
    Forecast,
)
from tasks.capacity.report import SeriesResult
from tasks.capacity.validation import Validated


def forecast_chart(
    history_t: np.ndarray,
    history_v: np.ndarray,
    forecast: pd.DataFrame,
    *,
    threshold: float,
    title: str,
    unit: str = "",
    filled: np.ndarray | None = None,
) -> bytes:
    """One small PNG (about 20-40 KB) for the markdown artifact."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.8), dpi=80)
    ax = fig.add_subplot(1, 1, 1)
    hist_index = pd.to_datetime(np.asarray(history_t), unit="s", utc=True)
    ts = pd.to_datetime(forecast["timestamp"], utc=True)
    ax.plot(hist_index, history_v, color="#333333", linewidth=0.8, label="history")
    if filled is not None and np.any(filled):
        mask = np.asarray(filled, dtype=bool)
        ax.scatter(
            hist_index[mask], np.asarray(history_v)[mask], s=4, color="#ff7f0e", zorder=3, label="repaired"
        )
    ax.fill_between(ts, forecast["lo_95"], forecast["hi_95"], color="#1f77b4", alpha=0.15, label="95%")
    ax.fill_between(ts, forecast["lo_80"], forecast["hi_80"], color="#1f77b4", alpha=0.3, label="80%")
    ax.plot(ts, forecast["mean"], color="#1f77b4", linewidth=1.2, label="forecast")
    ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit or "value", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left", ncol=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def chart_for(
    result: SeriesResult,
    spec: SeriesSettings,
    fc: Forecast,
    checked: Validated,
    step: float,
    filled: np.ndarray | None = None,
) -> str:
    """The chart of one series for the report; `filled` marks the points the repair interpolated."""
    from tasks.capacity.charts import data_uri, forecast_chart

    frame = fc.frame(pd.Timestamp(checked.timestamps[-1], unit="s", tz="UTC"), step)
    png = forecast_chart(
        np.asarray(checked.timestamps),
        np.asarray(checked.values),
        frame,
        threshold=spec.threshold,
        title=f"{spec.name}: {fc.model}, CV MASE {fc.cv_mase:.2f}",
        unit=spec.unit,
        filled=filled,
    )
    return data_uri(png)
