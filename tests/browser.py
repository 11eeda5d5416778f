"""A report page as a person sees it: rendered by headless Chromium, its layout measured by the browser itself.

`layout_problems(html_file)` returns what a reader would trip over: text in a figure (inline SVG, text kept as
text) that overlaps other text or leaves the figure, a figure wider than the page, a table cell that wraps.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Debian's Chromium on a machine without a network: no background connections, a fresh profile
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000", "--virtual-time-budget=15000"]

MEASURE = """<script>
window.addEventListener('load', () => {
  const problems = [];
  const page = document.body.getBoundingClientRect();
  document.querySelectorAll('figure svg').forEach((svg, k) => {
    const frame = svg.getBoundingClientRect();
    const name = svg.parentElement.getAttribute('aria-label');
    if (frame.right > page.right + 1) problems.push(`${name}: ${Math.round(frame.width)} px wide, wider than the page`);
    const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim())
      .map(t => [t.textContent.trim(), t.getBoundingClientRect()]);
    texts.forEach(([text, b]) => {
      if (b.left < frame.left - 1 || b.right > frame.right + 1 || b.top < frame.top - 1 || b.bottom > frame.bottom + 1)
        problems.push(`${name}: '${text}' leaves the figure`);
    });
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
      const [a, p] = texts[i], [b, q] = texts[j];
      const x = Math.min(p.right, q.right) - Math.max(p.left, q.left);
      const y = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (x > 1 && y > 0.15 * Math.min(p.height, q.height)) problems.push(`${name}: '${a}' overlaps '${b}'`);
    }
  });
  document.querySelectorAll('table').forEach((table, k) => {
    const box = table.getBoundingClientRect();
    if (box.right > page.right + 1) problems.push(`table ${k}: ${Math.round(box.width)} px wide, wider than the page`);
  });
  document.querySelectorAll('td, th').forEach(cell => {
    const style = getComputedStyle(cell);
    const line = parseFloat(style.lineHeight) || 1.25 * parseFloat(style.fontSize);
    const inner = cell.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
    if (inner > 1.6 * line) problems.push(`table cell wraps: '${cell.textContent}'`);
  });
  const out = document.createElement('pre');
  out.id = 'layout-check';
  out.textContent = JSON.stringify({problems, figures: document.querySelectorAll('figure svg').length,
                                    cells: document.querySelectorAll('td').length});
  document.body.appendChild(out);
});
</script>"""


def layout_problems(html_file: Path) -> dict:
    """{'problems': [...], 'figures': count, 'cells': count} as Chromium measured them."""
    page = html_file.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>")
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "page.html"
        probe.write_text(page, encoding="utf-8")
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={scratch}/profile", "--dump-dom",
                               probe.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"Chromium gave no measurement (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))
