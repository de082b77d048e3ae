"""Layout checks of the dashboard in Chromium, shared by the dashboard tests: measured
properties (nothing wider than the viewport, no clipped card text, cards stacked on a phone),
never pixels. Screenshots are saved beside them as artifacts, not compared."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``$GRISTMILL_E2E_ARTIFACTS/dashboard`` (CI uploads it), else the
    test's tmp dir."""
    base = os.environ.get("GRISTMILL_E2E_ARTIFACTS")
    return Path(base) / "dashboard" if base else tmp_path / "shots"


WIDTHS = {"desktop": (1366, 900), "phone": (375, 812)}

LAYOUT_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const bad = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > vw) bad.push(`page is ${doc.scrollWidth}px wide in a ${vw}px viewport`);
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('.js-plotly-plot') && !el.classList.contains('js-plotly-plot')) continue;
    if (el.closest('#js-plotly-tester')) continue;  // Plotly's text measurer, parked off-screen
    const inner = el.closest('.scroll');
    if (inner && inner !== el) continue;  // wide tables scroll inside their own box
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (r.right > vw + 0.5 || r.left < -0.5) {
      const name = `${el.tagName.toLowerCase()}#${el.id}.${el.getAttribute('class')}`;
      bad.push(`${name} spans ${r.left}..${r.right}`);
    }
  }
  for (const el of document.querySelectorAll('.card .value, .card .label, h1, h2')) {
    if (el.scrollWidth > el.clientWidth) bad.push(`clipped: ${el.textContent.trim()}`);
  }
  return bad;
}"""

SVGS_FIT_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].every(p => {
  const svg = p.querySelector('.main-svg');
  return svg && svg.getBoundingClientRect().width <= p.getBoundingClientRect().width + 0.5;
})"""

CARD_COLUMNS_JS = """() => {
  const out = [];
  for (const row of document.querySelectorAll('.cards')) {
    const lefts = [...row.querySelectorAll('.card')].map(c => c.getBoundingClientRect().left);
    const xs = new Set(lefts.map(Math.round));
    out.push(xs.size);
  }
  return out;
}"""


def check_layout(page: Any, shots: Path, name: str) -> None:
    """At each width: no overflow, no clipped text; one card per row on the phone, several
    on the desktop. Leaves ``<name>-<width>.png`` in ``shots``."""
    shots.mkdir(parents=True, exist_ok=True)
    for label, (w, h) in WIDTHS.items():
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_function("w => window.innerWidth === w", arg=w)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => r(null)))")
        page.wait_for_selector(".js-plotly-plot .main-svg")
        page.wait_for_function(SVGS_FIT_JS)  # responsive charts re-lay out after a resize
        problems = page.evaluate(LAYOUT_JS)
        page.screenshot(path=str(shots / f"{name}-{w}.png"), full_page=True)
        assert problems == [], f"{name} at {w}px ({label}): {problems[:5]}"
        columns = page.evaluate(CARD_COLUMNS_JS)
        assert columns, "no cards on the page"
        if label == "phone":
            assert set(columns) == {1}, f"cards do not stack at {w}px: {columns}"
        else:
            assert max(columns) > 1, f"cards in one column at {w}px: {columns}"
