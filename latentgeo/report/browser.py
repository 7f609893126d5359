"""Check a report in a real browser: headless Chromium, offline, with a probe that counts loaded images."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Union

from latentgeo.errors import LatentgeoError

__all__ = ["find_chromium", "browser_check"]

_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0, bad = [];
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; else bad.push(i);
  }
  var heads = document.querySelectorAll('section h2'), t = [];
  for (var j = 0; j < heads.length; j++) t.push(heads[j].textContent);
  var d = document.createElement('pre'); d.id = 'lg-probe';
  d.textContent = 'LGPROBE IMAGES ' + imgs.length + ' LOADED ' + ok + ' BAD [' + bad.join(',') + '] SECTIONS '
                  + JSON.stringify(t) + ' ENDPROBE';
  document.body.appendChild(d);
});
</script>"""

# Flags for a closed network: no background fetches, no component updates, no first-run UI.
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--disable-extensions",
          "--virtual-time-budget=5000"]


def find_chromium() -> Optional[str]:
    """Path of a Chromium/Chrome executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


def browser_check(html_path: Union[str, Path], chromium: Optional[str] = None, timeout: float = 120.0) -> dict:
    """Render ``html_path`` in headless Chromium and report what loaded.

    A copy of the page gets a small inline script that, on the ``load`` event, records the number of ``<img>``
    elements, how many decoded (``complete`` and ``naturalWidth > 0``) and the section headings; the DOM is dumped
    with ``--dump-dom`` and parsed. Returns ``{"images", "loaded", "bad": [indices], "sections": [titles], "dom"}``.
    """
    import json

    chromium = chromium or find_chromium()
    if chromium is None:
        raise LatentgeoError("no Chromium found; install it (apt-get install -y chromium) to check reports in a browser")
    html_path = Path(html_path)
    with tempfile.TemporaryDirectory(prefix="lg-chromium-") as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                         encoding="utf-8")
        cmd = [chromium, *_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", "--dump-dom", probe.resolve().as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"chromium exited with {res.returncode}: {res.stderr[-1500:]}")
    dom = res.stdout
    m = re.search(r"LGPROBE IMAGES (\d+) LOADED (\d+) BAD \[([\d,]*)\] SECTIONS (.*?) ENDPROBE", dom, re.S)
    if not m:
        raise RuntimeError("the probe script did not run in chromium (no result in the dumped DOM)")
    import html as _html

    return {"images": int(m.group(1)), "loaded": int(m.group(2)),
            "bad": [int(v) for v in m.group(3).split(",") if v], "sections": json.loads(_html.unescape(m.group(4))),
            "dom": dom}
