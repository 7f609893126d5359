"""A tiny, self-contained HTML report: sections of text, inline PNG figures and tables, in one file.

No network, no external CSS/JS, no template engine: the output opens from disk in any browser, offline.

    rep = Report("My run")
    rep.section("Data", "1,797 digits, 8x8 pixels.")
    rep.figure(fig, "Samples")            # a matplotlib Figure, a PNG path, or PNG bytes
    rep.table([[1, 0.5]], header=["step", "loss"])
    rep.write("runs/x/report.html")       # atomic
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from latentgeo.checkpoint import atomic_write_bytes
from latentgeo.errors import LatentgeoError

__all__ = ["Report", "png_bytes"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}
h2{margin-top:1.6em;border-bottom:1px solid #ccc;padding-bottom:.15em}
section p{margin:.5em 0}
figure{margin:1em 0;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555;margin-top:.3em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
.meta{color:#777;font-size:.85em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em}
"""


def png_bytes(fig: Any, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib Figure (closed afterwards), a PNG file path, or PNG bytes."""
    if isinstance(fig, (bytes, bytearray)):
        data = bytes(fig)
    elif isinstance(fig, (str, os.PathLike)):
        p = Path(fig)
        if not p.is_file():
            raise LatentgeoError(f"figure file '{p}' does not exist; pass an existing PNG path or a matplotlib Figure")
        data = p.read_bytes()
    elif hasattr(fig, "savefig"):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        try:
            import matplotlib.pyplot as plt

            plt.close(fig)
        except Exception:
            pass
        data = buf.getvalue()
    else:
        raise LatentgeoError(f"cannot make a figure from a {type(fig).__name__}; pass a matplotlib Figure, "
                             "a PNG file path or PNG bytes")
    if not data.startswith(_PNG_MAGIC):
        raise LatentgeoError("the figure is not a PNG image; save it as PNG (other formats are not inlined)")
    return data


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    try:  # numpy / torch scalars
        import numbers

        if isinstance(v, numbers.Number):
            return _fmt(float(v))
        if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
            return _fmt(v.item())
    except Exception:
        pass
    return str(v)


def _paragraphs(text: str) -> str:
    parts = [p.strip() for p in str(text).split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p)}</p>" for p in parts)


class Report:
    """An HTML report built in order: ``section`` starts a new section; ``figure``, ``table``, ``text`` and
    ``note`` append to the current one (or to an untitled preamble before the first section)."""

    def __init__(self, title: str, subtitle: Optional[str] = None):
        self.title = str(title)
        self.subtitle = subtitle
        self._sections: List[dict] = []
        self._preamble: List[str] = []
        self._n_figures = 0

    # ------------------------------------------------------------------ building
    @property
    def _body(self) -> List[str]:
        return self._sections[-1]["body"] if self._sections else self._preamble

    @property
    def section_titles(self) -> List[str]:
        return [s["title"] for s in self._sections]

    def section(self, title: str, text: str = "") -> "Report":
        """Start a new section with a heading and optional text (blank lines separate paragraphs)."""
        sid = f"s{len(self._sections) + 1}"
        self._sections.append({"id": sid, "title": str(title), "body": []})
        if text:
            self.text(text)
        return self

    def text(self, text: str) -> "Report":
        self._body.append(_paragraphs(text))
        return self

    def note(self, text: str) -> "Report":
        """A highlighted remark (e.g. 'not available in this version')."""
        self._body.append(f'<div class="note">{_paragraphs(text)}</div>')
        return self

    def figure(self, fig: Any, caption: str = "", width: Optional[int] = None) -> "Report":
        """Inline a figure (matplotlib Figure, PNG path or PNG bytes) as a base64 data URI, with a caption."""
        data = base64.b64encode(png_bytes(fig)).decode("ascii")
        self._n_figures += 1
        style = f' style="width:{int(width)}px"' if width else ""
        alt = html.escape(caption or f"figure {self._n_figures}", quote=True)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._body.append(f'<figure><img class="lg-fig" alt="{alt}" src="data:image/png;base64,{data}"{style}>'
                          f"{cap}</figure>")
        return self

    def table(self, rows: Sequence[Sequence[Any]], header: Optional[Sequence[Any]] = None,
              caption: str = "") -> "Report":
        """A table from rows of values (floats are shown with 4 significant digits)."""
        out = ["<table>"]
        if caption:
            out.append(f"<caption>{html.escape(caption)}</caption>")
        if header:
            out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead>")
        out.append("<tbody>")
        for r in rows:
            out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>")
        out.append("</tbody></table>")
        self._body.append("".join(out))
        return self

    # ------------------------------------------------------------------ output
    def to_html(self) -> str:
        now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                 '<meta name="viewport" content="width=device-width, initial-scale=1">',
                 # Forbid every network fetch: the report must be self-contained.
                 "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
                 "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
                 f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
                 f"<h1>{html.escape(self.title)}</h1>"]
        if self.subtitle:
            parts.append(f'<p class="meta">{html.escape(self.subtitle)}</p>')
        parts.append(f'<p class="meta">Generated {now} by latentgeo.</p>')
        parts.extend(self._preamble)
        if len(self._sections) > 1:
            parts.append("<nav><ul>" + "".join(f'<li><a href="#{s["id"]}">{html.escape(s["title"])}</a></li>'
                                               for s in self._sections) + "</ul></nav>")
        for s in self._sections:
            parts.append(f'<section id="{s["id"]}"><h2>{html.escape(s["title"])}</h2>{"".join(s["body"])}</section>')
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, path: Union[str, os.PathLike]) -> Path:
        """Write the report atomically to ``path`` (parent folders created); returns the path."""
        path = Path(path)
        atomic_write_bytes(path, self.to_html().encode("utf-8"))
        return path
