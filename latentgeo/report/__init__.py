"""Self-contained HTML reports (inline PNG figures, tables; no network, no external assets)."""
from latentgeo.report.browser import browser_check, find_chromium
from latentgeo.report.html import Report, png_bytes

__all__ = ["Report", "png_bytes", "browser_check", "find_chromium"]
