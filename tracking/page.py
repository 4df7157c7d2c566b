"""The kit for self-contained HTML pages (a run's report, a comparison of runs, a sweep's report): one style, tables
that sort on a click and filter as you type, figures embedded as data URIs, no network needed to open the file.

Knows no run, metric or chart: callers pass HTML fragments, DataFrames and figures.
"""
from __future__ import annotations

import base64
import html
import io

from tracking.files import write_text

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var ascending = th.dataset.order !== 'asc';
      rows.sort(function (a, b) {
        var x = a.cells[column].textContent, y = b.cells[column].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return ascending ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
      table.querySelectorAll('thead th').forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = ascending ? 'asc' : 'desc';
    });
  });
});
document.querySelectorAll('input.filter').forEach(function (input) {
  var table = document.getElementById(input.dataset.table), count = document.getElementById(input.dataset.table + '-count');
  function apply() {
    var needle = input.value.toLowerCase(), shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var keep = row.textContent.toLowerCase().indexOf(needle) !== -1;
      row.style.display = keep ? '' : 'none';
      if (keep) { shown += 1; }
    });
    count.textContent = ' ' + shown + ' shown';
  }
  input.addEventListener('input', apply);
  apply();
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2rem 1.5rem; color: #222; max-width: 100%; }
h1 { margin: 0 0 0.3rem; font-size: 1.6em; } h2 { font-size: 1.2em; margin: 1.4rem 0 0.4rem; }
.card h2 { margin-top: 0.2rem; } p { margin: 0.3rem 0; }
.path, .note, .about, .status { color: #555; font-size: 0.9em; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 0.3rem 0 0.8rem; font-size: 0.88em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: left; max-width: 40rem;
         overflow-wrap: break-word; }
table.sortable th { cursor: pointer; background: #f3f3f3; }
th[data-order=asc]::after { content: ' \\25B2'; } th[data-order=desc]::after { content: ' \\25BC'; }
.table-wrap { max-width: 100%; overflow-x: auto; }
.grid { display: flex; flex-wrap: wrap; gap: 1rem; } .grid img { max-width: 100%; height: auto; }
.top { display: flex; flex-wrap: wrap; gap: 1.2rem; align-items: flex-start; }
.card { flex: 1 1 18rem; min-width: 0; max-width: 100%; } .card img { width: 100%; height: auto; }
.card th, .card td { padding: 0.2rem 0.4rem; }
pre, code { white-space: pre-wrap; overflow-wrap: anywhere; } img { max-width: 100%; } .missing { color: #a33; } input.filter { padding: 0.3rem; width: 20rem; max-width: 90%; }
section.run { border-top: 2px solid #ccc; margin-top: 2rem; } .headline { font-size: 1.15em; font-weight: 600; }
"""


def image_html(data: bytes, kind: str = "png", alt: str = "", element_id: str | None = None) -> str:
    """Image bytes as an embedded <img>."""
    identity = f' id="{html.escape(element_id)}"' if element_id else ""
    return f'<img alt="{html.escape(alt)}"{identity} src="data:image/{kind};base64,{base64.b64encode(data).decode()}">'


def figure_html(fig, alt: str = "") -> str:
    """A matplotlib Figure as an embedded <img>."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return image_html(buffer.getvalue(), "png", alt)


def image_file_html(path: str | None, alt: str, element_id: str | None = None) -> str:
    """A PNG file as an embedded <img>, or a line saying it is missing."""
    if path is None:
        return f'<p class="missing">{html.escape(alt)}: not logged in this run.</p>'
    with open(path, "rb") as f:
        return image_html(f.read(), "png", alt, element_id)


def table_html(frame, table_id: str, sortable: bool = True, filterable: bool = False, decimals: int = 4) -> str:
    """A DataFrame as an HTML table (text escaped), sortable by a click on a column, with a filter box."""
    table = frame.to_html(index=False, escape=True, table_id=table_id, border=0, classes="sortable" if sortable else "",
                          float_format=lambda v: f"{v:.{decimals}f}", na_rep="")
    table = f'<div class="table-wrap">{table}</div>'  # a wide table scrolls by itself, never the page
    if filterable:
        return (f'<input class="filter" data-table="{table_id}" placeholder="Filter rows..." type="search">'
                f'<span class="count" id="{table_id}-count"></span>{table}')
    return table


def write_page(title: str, body: list[str], output: str) -> str:
    """A self-contained HTML page of `body` (HTML fragments) with this kit's style and its sorting and filtering
    script, written atomically to `output`; returns the path."""
    write_text(output, f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
                       f"content='width=device-width'><title>{html.escape(title)}</title><style>{STYLE}</style>"
                       f"</head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>")
    return output
