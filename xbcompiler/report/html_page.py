"""The cost report as one self-contained HTML page (``xbc report DIR --html``): to send to a colleague.

Standard library only: every text is escaped with :func:`html.escape`, the plots are inlined as
``data:image/png;base64,...`` URIs, the style sheet is inline, and nothing refers to another file or host.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape

from .compare import StrategyComparison
from .costs import CostReport
from .table import (
    LAYER_COLUMNS,
    STRATEGY_COLUMNS,
    TEXT_COLUMNS,
    device_line,
    layer_rows,
    plural,
    polarized_lines,
    saving_line,
    strategy_rows,
    total_row,
    totals_pairs,
)

#: What each plot of :func:`.plots.netlist_figures` shows.
CAPTIONS = {"occupancy.png": "fraction of each crossbar's cells holding a weight, per tile and slot (grey: empty)",
            "layers.png": "crossbars (one copy, replicas on top) and period in phases per image, per layer"}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #ddd; }
th { background: #f3f3f3; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tfoot td { font-weight: bold; border-top: 2px solid #999; }
img { max-width: 100%; border: 1px solid #eee; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.85em; }
.scroll { overflow-x: auto; }
"""


def _cells(tag: str, values: Sequence[str], numeric: Sequence[bool]) -> str:
    return "".join(f'<{tag} class="num">{escape(v)}</{tag}>' if n else f"<{tag}>{escape(v)}</{tag}>"
                   for v, n in zip(values, numeric))


def _table(css: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[bool],
           foot: Sequence[str] | None = None) -> str:
    head = f"<thead><tr>{_cells('th', columns, numeric)}</tr></thead>"
    body = "".join(f"<tr>{_cells('td', r, numeric)}</tr>" for r in rows)
    tail = "" if foot is None else f"<tfoot><tr>{_cells('td', foot, numeric)}</tr></tfoot>"
    return f'<div class="scroll"><table class="{css}">{head}<tbody>{body}</tbody>{tail}</table></div>'


def png_uri(png: bytes) -> str:
    """A PNG file's bytes as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def report_page(report: CostReport, comparison: StrategyComparison, plots: Mapping[str, bytes], *,
                title: str) -> str:
    """The page: title and target, totals, the per-layer table (one ``tbody`` row per layer, the total in
    ``tfoot``), notes, the device, the strategies compared, and ``plots`` (file name -> PNG bytes) inlined."""
    layer_numeric = [c not in TEXT_COLUMNS for c in LAYER_COLUMNS]
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>",
        (f"<p>target <b>{escape(report.target)}</b>, {plural(len(report.layers), 'crossbar layer')}, costs per image "
         "(docs/mapping.md, &ldquo;The cost report&rdquo;)</p>"),
        "<h2>Totals</h2>",
        _table("totals", ("", "total"), totals_pairs(report), numeric=(False, True)),
        "<h2>Per layer</h2>",
        _table("layers", LAYER_COLUMNS, layer_rows(report), numeric=layer_numeric, foot=total_row(report)),
        *(f"<p>{escape(line)}</p>" for line in polarized_lines(report)),
        f"<p>{escape(device_line(report))}</p>",
        "<h2>Strategies (cost model)</h2>",
        _table("strategies", STRATEGY_COLUMNS, strategy_rows(comparison),
               numeric=[c != "strategy" for c in STRATEGY_COLUMNS]),
        f"<p>{escape(saving_line(comparison))}</p>",
    ]
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [f'<figure><img src="{png_uri(png)}" alt="{escape(name)}"><figcaption>{escape(name)}: '
                  f"{escape(CAPTIONS.get(name, ''))}</figcaption></figure>" for name, png in plots.items()]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
