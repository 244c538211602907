"""``xbc report DIR --html``: one self-contained page; ``--json``: the same report for tools."""

from __future__ import annotations

import base64
import json
import sys
from html.parser import HTMLParser

import pytest

from tests.models import replicated_net
from xbcompiler.cli import main
from xbcompiler.report import compare_netlist, cost_report
from xbcompiler.report.html_page import report_page

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    compiled = replicated_net()
    out = tmp_path_factory.mktemp("html") / "net"
    compiled.save(out)
    return out, compiled.netlist


class Page(HTMLParser):
    """The tables (class -> rows of cells, per section), the images' sources, and every attribute value."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, dict[str, list[list[str]]]] = {}
        self.images: list[str] = []
        self.attributes: list[str] = []
        self.title = ""
        self._table = self._section = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        self.attributes += [v for _, v in attrs if v]
        if tag == "table":
            self._table = values.get("class", "")
            self.tables[self._table] = {}
        elif tag in ("thead", "tbody", "tfoot"):
            self._section = tag
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(values["src"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._cell or []))
            self._cell = None
        elif tag == "tr":
            self.tables[self._table].setdefault(self._section, []).append(self._row)
            self._row = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_html_page_is_self_contained_with_a_row_per_layer(saved, capsys):
    out, netlist = saved
    assert main(["report", str(out), "--html"]) == 0
    assert f"wrote {out / 'report.html'}" in capsys.readouterr().out
    text = (out / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    layers = page.tables["layers"]
    assert [row[0] for row in layers["tbody"]] == [layer.name for layer in netlist.layers]
    assert layers["thead"][0][:2] == ["layer", "strategy"] and layers["tfoot"][0][0] == "total"
    assert layers["tfoot"][0][4] == str(netlist.summary["crossbars"])
    assert [row[0] for row in page.tables["strategies"]["tbody"]] == ["fully-folded", "semi-folded", "fully-unfolded"]
    assert ["compute crossbars", str(netlist.summary["crossbars"])] in page.tables["totals"]["tbody"]
    assert len(page.images) == 2
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    assert "http://" not in text and "https://" not in text
    assert not any(v.startswith(("http", "//", "file:")) for v in page.attributes)
    assert "isaac-like" in text and page.title == "xbc report: net"
    assert not (out / "occupancy.png").exists()  # plots made for the page only


def test_html_to_a_named_file_with_plots(saved, tmp_path, capsys):
    out, _ = saved
    page_path, plots = tmp_path / "page.html", tmp_path / "plots"
    assert main(["report", str(out), "--html", str(page_path), "--plot-dir", str(plots)]) == 0
    assert sorted(p.name for p in plots.iterdir()) == ["layers.png", "occupancy.png"]
    inlined = [base64.b64decode(src.split(",", 1)[1]) for src in parse(page_path.read_text()).images]
    assert inlined == [(plots / "occupancy.png").read_bytes(), (plots / "layers.png").read_bytes()]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_html_into_a_directory_is_bad_input(saved, tmp_path, capsys):
    out, _ = saved
    assert main(["report", str(out), "--html", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "XB004" in err and "is a directory" in err and "Traceback" not in err


def test_html_without_matplotlib_writes_nothing(saved, tmp_path, capsys, monkeypatch):
    out, _ = saved
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    target = tmp_path / "r.html"
    assert main(["report", str(out), "--html", str(target)]) == 2
    assert "XB005" in capsys.readouterr().err and not target.exists()


def test_page_escapes_text(saved):
    _, netlist = saved
    text = report_page(cost_report(netlist), compare_netlist(netlist), {}, title="<script>alert(1)</script> & co")
    assert "<script>" not in text and "&lt;script&gt;" in text and "&amp; co" in text
    assert "<img" not in text


def test_json_carries_the_whole_report_with_stable_keys(saved, tmp_path, capsys):
    out, netlist = saved
    page_path = tmp_path / "r.html"
    assert main(["report", str(out), "--json", "--plot-dir", str(tmp_path / "p"), "--html", str(page_path)]) == 0
    text = capsys.readouterr().out
    data = json.loads(text)
    assert list(data) == sorted(data) == ["device", "html", "layers", "netlist", "plots", "strategies", "target",
                                          "totals"]
    assert data["html"] == str(page_path) and page_path.is_file()
    assert data["plots"] == [str(tmp_path / "p" / "occupancy.png"), str(tmp_path / "p" / "layers.png")]
    assert [r["name"] for r in data["layers"]] == [layer.name for layer in netlist.layers]
    assert {"crossbars", "crossbars_with_replicas", "energy_pj", "latency_ns", "period"} <= set(data["layers"][0])
    assert data["totals"]["crossbars"] == netlist.summary["crossbars"] and data["target"] == "isaac-like"
    assert set(data["strategies"]["totals"]) == {"fully-folded", "semi-folded", "fully-unfolded"}
    assert main(["report", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["plots"] == [] and again["html"] is None and again["layers"] == data["layers"]
