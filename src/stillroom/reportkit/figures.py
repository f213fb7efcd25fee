"""Report figures: matplotlib on an Agg canvas, without touching pyplot's global state."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110


@dataclass(frozen=True)
class Plot:
    name: str  # file stem, e.g. under plots/
    title: str
    caption: str
    png: bytes

    @property
    def data_uri(self) -> str:
        """The PNG inline, so a page stays one self-contained file."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches with its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without touching pyplot's global backend
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without a software stamp so equal figures give equal bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()
