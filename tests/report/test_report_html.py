"""The HTML report: structure, self-containment, and a real render in headless Chromium."""
import base64
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from latentgeo.errors import LatentgeoError  # noqa: E402
from latentgeo.report import Report, browser_check, find_chromium  # noqa: E402

CHROMIUM = find_chromium()


def _build(tmp_path):
    rep = Report("Test <report>", subtitle="digits & more")
    rep.section("First section", "Plain text with <b>markup</b> that must be escaped.\n\nSecond paragraph.")
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 1])
    rep.figure(fig, "A line")
    rep.section("Second section")
    rep.table([["a", 1.23456789, 3], ["b", float("nan"), 123456]], header=["name", "value", "n"])
    # a PNG given as a file path
    fig2, ax2 = plt.subplots(figsize=(2, 2))
    ax2.imshow([[0, 1], [1, 0]])
    png = tmp_path / "x.png"
    fig2.savefig(png)
    plt.close(fig2)
    rep.figure(png, "From a file")
    rep.section("Third section")
    rep.note("not available in this version")
    out = rep.write(tmp_path / "sub" / "report.html")
    return rep, out


def test_report_structure_and_self_contained(tmp_path):
    rep, out = _build(tmp_path)
    html = out.read_text()
    assert rep.section_titles == ["First section", "Second section", "Third section"]
    for t in rep.section_titles:
        assert f"<h2>{t}</h2>" in html
    assert "&lt;b&gt;markup&lt;/b&gt;" in html and "<b>markup" not in html
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in imgs)
    for s in imgs:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(b"\x89PNG")
    # nothing external: no http(s) URLs, no <link>/<script src>
    assert not re.search(r"(src|href)=\"(https?:|//)", html)
    assert "<link" not in html
    assert "1.235" in html and "n/a" in html and "123,456" in html
    assert not list((tmp_path / "sub").glob(".*tmp"))  # atomic write left no temp file


def test_report_rejects_bad_figure(tmp_path):
    rep = Report("x")
    with pytest.raises(LatentgeoError):
        rep.figure(tmp_path / "missing.png")
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(LatentgeoError):
        rep.figure(tmp_path / "a.jpg")
    with pytest.raises(LatentgeoError):
        rep.figure(42)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); CI installs it")
def test_report_renders_in_headless_chromium(tmp_path):
    rep, out = _build(tmp_path)
    res = browser_check(out)
    assert res["images"] == 2 and res["loaded"] == 2 and res["bad"] == []
    assert res["sections"] == rep.section_titles


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); CI installs it")
def test_chromium_probe_detects_a_broken_image(tmp_path):
    # The probe must be able to fail: a corrupt PNG payload is reported as not loaded.
    rep = Report("broken")
    rep.section("S")
    rep.figure(b"\x89PNG\r\n\x1a\n" + b"garbage", "broken image")
    out = rep.write(tmp_path / "r.html")
    res = browser_check(out)
    assert res["images"] == 1 and res["loaded"] == 0 and res["bad"] == [0]
