"""The HTML report in headless Chromium at desktop (1280 px) and phone (390 px) widths: no console errors,
nothing overflows the viewport horizontally (wide tables scroll inside their own box), no two blocks overlap,
no figure caption runs wider than its image.

A copy of the page gets a small script that measures element boxes after load and writes its verdict into the
DOM, read back with ``--dump-dom``; the untouched page is screenshotted into the test's tmp dir (and into
``$EHRSEQ_SCREENSHOT_DIR`` when set) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import CARD, _frame  # noqa: E402

from ehrseq.evaluate.conformal import SplitConformalClassifier  # noqa: E402
from ehrseq.evaluate.report import build_report, write_report  # noqa: E402

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
WIDTHS = {"desktop": 1280, "phone": 390}

CHECK_JS = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
window.addEventListener('load', () => {
  const W = document.documentElement.clientWidth, bad = window.__errors.map(m => 'js error: ' + m);
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                     (el.closest('section') ? ' in ' + el.closest('section').id : '');
  if (document.documentElement.scrollWidth > W + 1) bad.push('page scrolls sideways: ' +
      document.documentElement.scrollWidth + ' > ' + W);
  for (const el of document.body.querySelectorAll('*')) {
    if (el.parentElement && el.parentElement.closest('.scroll')) continue;  // scrolls inside its own box
    const r = el.getBoundingClientRect();
    if (r.width && (r.right > W + 1 || r.left < -1)) bad.push('overflows: ' + name(el) + ' ' +
        Math.round(r.left) + '..' + Math.round(r.right) + ' of ' + W);
  }
  for (const img of document.images) if (!img.complete || !img.naturalWidth) bad.push('not loaded: ' + img.alt);
  for (const f of document.querySelectorAll('figure')) {  // a caption no wider than its image
    const i = f.querySelector('img'), c = f.querySelector('figcaption');
    if (i && c && c.getBoundingClientRect().width > i.getBoundingClientRect().width + 1) bad.push(
        'caption wider than its image: ' + name(f) + ' ' + Math.round(c.getBoundingClientRect().width) + ' > ' +
        Math.round(i.getBoundingClientRect().width));
  }
  const blocks = Array.from(document.querySelectorAll('h1,h2,p,ul,.scroll,figure,img,figcaption'));
  for (let i = 0; i < blocks.length; i++) for (let j = i + 1; j < blocks.length; j++) {
    const a = blocks[i], b = blocks[j];
    if (a.contains(b) || b.contains(a)) continue;
    const p = a.getBoundingClientRect(), q = b.getBoundingClientRect();
    const dx = Math.min(p.right, q.right) - Math.max(p.left, q.left);
    const dy = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
    if (dx > 1 && dy > 1) bad.push('overlap: ' + name(a) + ' / ' + name(b));
  }
  const out = document.createElement('pre');
  out.id = 'layout-verdict';
  out.textContent = bad.length ? 'FAIL\\n' + bad.slice(0, 20).join('\\n') : 'OK';
  document.body.appendChild(out);
});
</script>"""


def _chromium(tmp: Path, tag: str, width: int, *args: str) -> subprocess.Popen:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp / f'profile-{tag}'}",
           f"--window-size={width},2000", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line]


def _survival_frame() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    df = _frame(90).drop(columns=["y_true", "y_prob"])
    risk = rng.normal(size=len(df))
    t_event, t_cens = rng.exponential(300 * np.exp(-risk)), rng.uniform(0, 700, len(df))
    df = df.assign(duration=np.minimum(t_event, t_cens), event=(t_event <= t_cens).astype(int), risk=risk)
    times = np.unique(np.r_[np.quantile(df["duration"], np.linspace(0, 1, 40)), 90, 365])
    return df, pd.DataFrame(np.exp(-np.outer(times / 300.0, np.exp(risk))), index=times)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A binary report with every section (external site, conformal, a long unbroken model-card value) and a
    survival report with curves, written to HTML."""
    root = tmp_path_factory.mktemp("browser")
    df = _frame()
    conformal = SplitConformalClassifier(alpha=0.1).fit(df["y_prob"].to_numpy(), df["y_true"].to_numpy())
    card = {**CARD, "evaluated_on": "/data/" + "very_long_directory_name_" * 6 + "events.parquet (split: held_out)"}
    binary = build_report(df, "binary", card, external=_frame(80, seed=9, small_site=0, prefix="x"),
                          conformal=conformal, n_boot=20, decision_threshold=0.4,
                          task_info={"name": "toy", "kind": "binary", "definition": "Flare within 90 days.",
                                     "source": "labels:toy.parquet"})
    sdf, curves = _survival_frame()
    survival = build_report(sdf, "survival", CARD, n_boot=10, survival_curves=curves, horizons=(90, 365))
    return {"binary": write_report(binary, root / "binary")["html"],
            "survival": write_report(survival, root / "survival")["html"]}


def test_report_pages_fit_desktop_and_phone_without_errors_or_overlap(pages: dict[str, Path], tmp_path: Path) -> None:
    runs = []
    for kind, page in pages.items():
        checked = tmp_path / f"{kind}-checked.html"
        checked.write_text(page.read_text().replace("</body>", CHECK_JS + "</body>"))
        for label, width in WIDTHS.items():
            if kind == "survival" and label == "desktop":
                continue  # the phone width is the hard case; one desktop page keeps the test fast
            tag = f"{kind}-{label}"
            shot = tmp_path / f"{tag}.png"
            # one run dumps the DOM and takes the screenshot (the verdict is appended below the first 2000 px)
            runs.append((tag, shot, _chromium(tmp_path, tag, width, "--dump-dom", f"--screenshot={shot}",
                                              checked.resolve().as_uri())))
    failures = []
    for tag, shot, proc in runs:
        html_out, err = proc.communicate(timeout=90)
        verdict = re.search(r'<pre id="layout-verdict">(.*?)</pre>', html_out, re.S)
        if verdict is None:
            failures.append(f"{tag}: no verdict in the dumped DOM ({err[-500:]})")
        elif verdict.group(1).strip() != "OK":
            failures.append(f"{tag}: {verdict.group(1).strip()}")
        if _console_errors(err):
            failures.append(f"{tag}: console errors {_console_errors(err)}")
        if not (shot.exists() and shot.stat().st_size > 0):
            failures.append(f"{tag}: no screenshot ({err[-500:]})")
        elif os.environ.get("EHRSEQ_SCREENSHOT_DIR"):
            dest = Path(os.environ["EHRSEQ_SCREENSHOT_DIR"])
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, dest / shot.name)
    assert not failures, "\n".join(failures)


def test_layout_check_catches_a_page_that_overflows(tmp_path: Path) -> None:
    """The check itself: a 2000 px wide block outside a scroll box fails at phone width."""
    page = tmp_path / "wide.html"
    page.write_text('<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width"></head><body>'
                    '<p style="width:2000px">wide</p><p style="margin-top:-30px">on top</p>'
                    + CHECK_JS + "</body></html>")
    proc = _chromium(tmp_path, "wide", WIDTHS["phone"], "--dump-dom", page.resolve().as_uri())
    out, _ = proc.communicate(timeout=90)
    verdict = re.search(r'<pre id="layout-verdict">(.*?)</pre>', out, re.S)
    assert verdict is not None and verdict.group(1).startswith("FAIL")
    assert "page scrolls sideways" in verdict.group(1) and "overlap: p / p" in verdict.group(1)
