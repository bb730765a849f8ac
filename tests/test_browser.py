"""The report and the explain gallery in a real browser (headless Chromium driven by Playwright).

Checks, at 1280 px: no element is wider than the viewport, every image loads, and moving a latent
slider changes the shown frame and the p(pos) text; the report also at 1000 px. Screenshots are saved
under ``$MEDXGAN_ARTIFACTS`` (CI: ``.ci-artifacts/``, where ``MEDXGAN_REQUIRE_BROWSER=1`` turns a skip into a failure), else in the test's temp folder.

Needs the ``playwright`` Python package (``pip install ".[browser]"``) and a Chromium executable
(Debian's ``chromium``; ``MEDXGAN_CHROMIUM`` names another). Nothing is downloaded: Playwright drives
the system browser. Without either, the tests skip with the reason.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import write_png
from test_report import tiny_eval  # noqa: F401  (the module fixture: a real tiny evaluation)

from medxgan.report.html import write_report

WIDTH = 1280
_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for c in (os.environ.get("MEDXGAN_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if c and (shutil.which(c) or Path(c).is_file()):
            return shutil.which(c) or c
    return None


def _skip(reason: str):
    if os.environ.get("MEDXGAN_REQUIRE_BROWSER"):  # CI (.ci/run) installs the browser: not finding it is a failure there
        pytest.fail(f"MEDXGAN_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        _skip("playwright not installed (pip install '.[browser]')")
    exe = _chromium()
    if exe is None:
        _skip("no Chromium executable (apt-get install chromium, or set MEDXGAN_CHROMIUM)")
    profile = tempfile.mkdtemp(prefix="medxgan-chromium-")
    with sync_api.sync_playwright() as p:
        try:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=exe, headless=True, args=_ARGS,
                                                       viewport={"width": WIDTH, "height": 900})
        except Exception as exc:  # a browser that cannot start here is an environment matter, not a failure
            _skip(f"Chromium at {exe} did not start: {str(exc).splitlines()[0]}")
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    d = os.environ.get("MEDXGAN_ARTIFACTS")
    out = Path(d) if d else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


_WIDE = """() => { const vw = document.documentElement.clientWidth, bad = [];
  for (const el of document.querySelectorAll('body *')) { const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > vw + 1) bad.push(el.tagName + '.' + el.className + ' right=' + Math.round(r.right)); }
  return {vw: vw, scroll: document.documentElement.scrollWidth, bad: bad.slice(0, 10)}; }"""
_IMAGES = """() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))"""


def _open(ctx, index: Path, width: int = WIDTH):
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(index.resolve().as_uri())
    page.wait_for_load_state("load")
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    return page, errors


def _fits(page) -> None:
    w = page.evaluate(_WIDE)
    assert w["scroll"] <= w["vw"] and not w["bad"], w
    assert page.evaluate(_IMAGES) == []


def _drag(page, slider) -> tuple[str, str]:
    """Move a slider to alpha = 0 the way a user does (focus, Home key: an input event); return
    (frame src, p text) after the move."""
    slider.locator("input[type=range]").focus()
    page.keyboard.press("Home")
    return slider.locator("img.sl-frame").get_attribute("src"), slider.locator(".sl-p").inner_text()


def test_report_in_a_browser(browser, tiny_eval, tmp_path, artifacts):  # noqa: F811
    ev = tmp_path / "eval"
    shutil.copytree(tiny_eval, ev)
    # stored p(pos) per frame that differ along the path (the tiny classifier's barely move): the page shows what is stored
    fr = sorted((ev / "frames").glob("*.npz"))[0]
    with np.load(fr) as z:
        d = {k: z[k] for k in z.files}
    d["frame_probs"] = np.linspace(0.1, 0.9, len(d["frames"])).astype(np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **d)
    fr.write_bytes(buf.getvalue())
    index = write_report(ev)
    page, errors = _open(browser, index)
    _fits(page)
    page.screenshot(path=str(artifacts / "report-1280.png"), full_page=True)
    sliders = page.locator(".slider")
    assert sliders.count() == 3
    target = page.locator(f".slider[data-slider*='{fr.stem}']").first
    before = (target.locator("img.sl-frame").get_attribute("src"), target.locator(".sl-p").inner_text())
    assert before[1] == "0.900"
    after = _drag(page, target)
    assert after[0] != before[0] and after[0].endswith("_f00.png") and after[1] == "0.100"
    assert target.locator(".sl-alpha").inner_text() == "0.00"
    assert page.evaluate(_IMAGES) == []  # the new frame loaded too
    target.screenshot(path=str(artifacts / "report-slider-alpha0.png"))
    assert not errors
    page.close()
    page, errors = _open(browser, index, 1000)
    _fits(page)
    page.screenshot(path=str(artifacts / "report-1000.png"), full_page=True)
    assert not errors
    page.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit (the TorchScript classifier of the tiny run)
def test_explain_gallery_in_a_browser(browser, gan_run, tmp_path, artifacts):
    from helpers import known_images

    from medxgan.pipeline import MedXGAN
    from medxgan.report import tensor_to_pil

    x, _, _ = known_images(3, seed=21)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        write_png(inputs / f"scan{i}.png", np.asarray(tensor_to_pil(x[i])))
    mx = MedXGAN.load(gan_run, device="cpu", steps=10, restarts=1)
    summary = mx.explain_files(inputs, tmp_path / "expl", batch_size=3, frames=5, show_progress=False)
    page, errors = _open(browser, tmp_path / "expl" / "index.html")
    _fits(page)
    page.screenshot(path=str(artifacts / "gallery-1280.png"), full_page=True)
    rows = page.locator("table.sortable tbody tr")
    assert rows.count() == 3
    # the slider of the scan whose p(pos) moves most along its path
    probs = [r["frame_probs"] for r in (__import__("json").loads((tmp_path / "expl" / n["name"] / "explanation.json").read_text())
                                        for n in summary["images"])]
    k = int(np.argmax([abs(p[-1] - p[0]) for p in probs]))
    assert f"{probs[k][-1]:.3f}" != f"{probs[k][0]:.3f}"
    slider = rows.nth(k).locator(".slider")
    before = (slider.locator("img.sl-frame").get_attribute("src"), slider.locator(".sl-p").inner_text())
    after = _drag(page, slider)
    assert after[0] != before[0] and after[1] != before[1] and after[1] == f"{probs[k][0]:.3f}"
    # sorting by PSNR (a click on its header): ascending, then descending
    page.locator("th.sort", has_text="PSNR").click()
    col = page.evaluate("() => Array.from(document.querySelectorAll('table.sortable tbody tr')).map(r => parseFloat(r.cells[8].dataset.v))")
    assert col == sorted(col)
    page.locator("th.sort", has_text="PSNR").click()
    col = page.evaluate("() => Array.from(document.querySelectorAll('table.sortable tbody tr')).map(r => parseFloat(r.cells[8].dataset.v))")
    assert col == sorted(col, reverse=True)
    # the scan's own page
    page.locator("td.name a").first.click()
    page.wait_for_load_state("load")
    _fits(page)
    assert page.locator(".slider").count() == 1
    page.screenshot(path=str(artifacts / "explanation-1280.png"), full_page=True)
    assert not errors
    page.close()
