"""Run JupyterLab on loopback and drive it with Playwright + Debian's Chromium (offline).

Used by tests/test_browser.py and benchmarks/bench_explorer.py. Recipe: ../shared BROWSER-TESTING:
fixed token, free port, a temp dir as the server root, Chromium from /usr/bin/chromium, the
server stopped by its PID afterwards.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("SLW_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
SHOWCASE = REPO / "tests" / "notebooks" / "browser_showcase.ipynb"
TOKEN = "slw-test-token"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--disable-dev-shm-usage"]


def missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    for mod in ("jupyterlab", "playwright", "anywidget"):
        try:
            __import__(mod)
        except ImportError:
            return f"python package {mod!r} is missing (pip install -e '.[dev]')"
    return None


# --------------------------------------------------------------------------- the shared demo store
def demo_store() -> Path:
    """The one store of the demo world that the browser tests, the marimo test and the notebooks
    of a test run share: ``$SLW_DEMO_STORE``, else ``artifacts/demo-lens-store`` (kept between runs;
    scripts/test.sh links ``notebooks/demo-lens-store`` to it). The store is safe to share: every
    entry carries the fingerprint of what made it (a stale one is recomputed) and concurrent
    writers take its locks."""
    return Path(os.environ.get("SLW_DEMO_STORE") or REPO / "artifacts" / "demo-lens-store").resolve()


_FILLED: set[Path] = set()


def filled_demo_store() -> Path:
    """:func:`demo_store` holding the demo lens and every result the views of the showcase read
    (maps, labels, class relevances, the attribution graph of the shortcut class, the audit).
    The first call of a test session runs the showcase notebook's code in a plain Python process
    (minutes the first time; a kernel busy that long under a loaded CPU can lose its websocket, so
    the browser only loads); later calls return at once, and a store filled by an earlier run
    only loads (about 20 s)."""
    store = demo_store()
    if store not in _FILLED:
        store.parent.mkdir(parents=True, exist_ok=True)
        nb = json.loads(SHOWCASE.read_text())
        code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        env = {**os.environ, "SLW_DEMO_STORE": str(store), "TQDM_DISABLE": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        t0 = time.time()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=store.parent, check=True, timeout=1500)
        print(f"[demo store {store}: filled or loaded in {time.time() - t0:.0f} s]")
        _FILLED.add(store)
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(files: list[Path], timeout: float = 90.0, links: dict[str, Path] | None = None):
    """Copy ``files`` into a temp dir, start JupyterLab there; yields (base_url, root_dir).
    ``links``: name -> path of symbolic links to put next to them (e.g. a shared store)."""
    root = Path(tempfile.mkdtemp(prefix="slw-jlab-"))
    for f in files:
        shutil.copy(f, root / Path(f).name)
    for name, target in (links or {}).items():
        (root / name).symlink_to(Path(target).resolve(), target_is_directory=True)
    port = free_port()
    env = dict(os.environ)
    # keep user settings / workspaces out of the test: a fresh config and data dir per run
    for var, sub in (("JUPYTER_CONFIG_DIR", "cfg"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "ws"), ("IPYTHONDIR", "ipython")):
        (root / ".jl" / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / ".jl" / sub)
    # no "news?" toast over the widgets in screenshots
    notif = root / ".jl" / "settings" / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True, exist_ok=True)
    (notif / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    # the kernel imports semlens_widgets from this checkout even if it is not installed
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={TOKEN}", "--ServerApp.disable_check_xsrf=True", "--allow-root",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--LabServerApp.open_browser=False",
           "--ServerApp.port_retries=0"]
    try:
        # JupyterLab and its kernels (same session) stop together
        with server(cmd, root, env, root / "jupyterlab.log", f"{base}/api/status?token={TOKEN}", "JupyterLab", timeout):
            yield base, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def server(cmd: list[str], cwd: Path, env: dict, log_path: Path, ready_url: str, name: str, timeout: float):
    """Run ``cmd`` in its own process group (output to ``log_path``), wait until ``ready_url``
    answers 200, yield the process; afterwards stop the whole group by its PID."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}); log: {Path(log_path).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"{name} did not start in time")
            time.sleep(0.3)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


@contextlib.contextmanager
def chromium(viewport=(1400, 1000)):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            yield ctx
        finally:
            browser.close()


def open_notebook(ctx, base: str, name: str):
    page = ctx.new_page()
    page.goto(f"{base}/lab/tree/{name}?token={TOKEN}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # wait until the kernel is connected and idle (Run All before that runs nothing)
    page.wait_for_function(
        "() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
        " return s && s.getAttribute('data-status') === 'idle'; }", timeout=60_000)
    dismiss_dialogs(page)
    return page


def dismiss_dialogs(page) -> list[str]:
    """Accept any JupyterLab dialog in the way (e.g. a kernel chooser); returns their texts."""
    texts = []
    for _ in range(3):
        dlg = page.locator(".jp-Dialog")
        if not dlg.count():
            break
        texts.append(dlg.first.inner_text()[:300])
        btn = dlg.first.locator(".jp-mod-accept")
        if btn.count():
            btn.first.click()
        else:
            page.keyboard.press("Escape")
        try:
            dlg.first.wait_for(state="detached", timeout=5_000)
        except Exception:  # noqa: BLE001 - playwright TimeoutError: look again (at most 3 times)
            pass
    if texts:
        print(f"[dismissed JupyterLab dialogs: {texts}]")
    return texts


def run_all(page, attempts: int = 6) -> None:
    """Run > Run All Cells (the menu: keyboard shortcuts need a focused cell). Right after the
    page loads the kernel's websocket may not be up and the request is lost: retry until the
    first code cell shows an execution count ([*] or [1])."""
    started = ("() => { const p = document.querySelector('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt');"
               " return !!p && /\\[(\\*|\\d+)\\]/.test(p.textContent); }")
    for _ in range(attempts):
        dismiss_dialogs(page)  # e.g. "Select Kernel" when the kernel died while starting
        try:  # a dialog may open again between the dismissal and the click: it takes the click
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click(timeout=10_000)
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click(timeout=10_000)
            page.wait_for_function(started, timeout=5_000)
            return
        except Exception:  # noqa: BLE001 - playwright TimeoutError: dismiss and try again
            page.keyboard.press("Escape")
    raise RuntimeError("Run All Cells never started the notebook")


def canvas_ink(page, selector: str) -> dict:
    """Pixels of the first canvas matching selector that differ from its top-left pixel."""
    return page.evaluate(
        """(sel) => {
          const c = document.querySelector(sel);
          if (!c) return {found: false};
          const ctx = c.getContext('2d');
          const d = ctx.getImageData(0, 0, c.width, c.height).data;
          const bg = [d[0], d[1], d[2]];
          let ink = 0;
          for (let i = 0; i < d.length; i += 4) {
            if (Math.abs(d[i] - bg[0]) + Math.abs(d[i + 1] - bg[1]) + Math.abs(d[i + 2] - bg[2]) > 40) ink++;
          }
          return {found: true, ink, total: d.length / 4, width: c.width, height: c.height};
        }""", selector)


_COLORS_JS = """(c, minPx) => {
          if (!c) return {colors: 0, bbox: null, ink: 0};
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          const counts = new Map();
          for (let i = 0; i < d.length; i += 4) {
            const k = ((d[i] >> 3) << 10) | ((d[i + 1] >> 3) << 5) | (d[i + 2] >> 3);
            counts.set(k, (counts.get(k) || 0) + 1);
          }
          let bg = 0, most = -1;
          for (const [k, n] of counts) if (n > most) { most = n; bg = k; }
          let colors = 0;
          for (const [k, n] of counts) if (k !== bg && n >= minPx) colors++;
          let x0 = 1e9, y0 = 1e9, x1 = -1, y1 = -1, ink = 0;
          const br = (bg >> 10) << 3, bgc = ((bg >> 5) & 31) << 3, bb = (bg & 31) << 3;
          for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
            const i = 4 * (y * c.width + x);
            if (Math.abs(d[i] - br) + Math.abs(d[i + 1] - bgc) + Math.abs(d[i + 2] - bb) > 60) {
              ink++; if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
            }
          }
          return {colors, ink, bbox: ink ? [x0 / c.width, y0 / c.height, (x1 + 1) / c.width, (y1 + 1) / c.height] : null};
        }"""


def canvas_colors(page, selector, min_pixels: int = 12, index: int = 0) -> dict:
    """Distinct colours drawn on the index-th canvas matching selector (RGB quantised to 5 bits,
    ignoring the background = the most common colour; a colour counts when it covers at least
    ``min_pixels`` pixels), and the bounding box of everything that is not background as a
    fraction of the canvas: {"colors": int, "bbox": [x0, y0, x1, y1] in 0..1, "ink": int}.
    ``selector`` may also be a Playwright locator of the canvas (it finds canvases inside shadow
    roots, as in marimo)."""
    if not isinstance(selector, str):
        return selector.nth(index).evaluate(f"(c, minPx) => ({_COLORS_JS})(c, minPx)", min_pixels)
    return page.evaluate(f"([sel, minPx, index]) => ({_COLORS_JS})(document.querySelectorAll(sel)[index], minPx)",
                         [selector, min_pixels, index])


DECODED_JS = """(root) => [...root.querySelectorAll('img.slw-thumb-img, canvas.slw-thumb-img')].filter(i =>
    i.tagName === 'CANVAS' ? i.width > 0 : (i.complete && i.naturalWidth > 0)).length"""


def wait_decoded(locator, n: int, timeout: float = 60_000) -> int:
    """Wait until at least ``n`` thumbnails (decoded <img> or drawn <canvas>) are inside the
    element; returns how many there are."""
    handle = locator.element_handle()
    locator.page.wait_for_function(f"([root, n]) => ({DECODED_JS})(root) >= n", arg=[handle, n], timeout=timeout)
    return locator.evaluate(DECODED_JS)


def set_theme(page, dark: bool) -> None:
    """Settings > Theme > JupyterLab Dark / Light, then wait until the page says so."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text="JupyterLab Dark" if dark else "JupyterLab Light").first.click()
    page.wait_for_selector(f"body[data-jp-theme-light='{'false' if dark else 'true'}']", timeout=20_000, state="attached")


def hide_side_panels(page) -> None:
    """Collapse JupyterLab's left side panel (the file browser) so the notebook uses the width:
    clicking the current tab of the left side bar closes its panel."""
    current = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if current.count():
        current.first.click()
        page.wait_for_selector(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current", state="detached", timeout=10_000)


def clipped_placeholders(scope) -> list[str]:
    """Placeholders of the text inputs under ``scope`` (a locator) that do not fit their box."""
    return scope.evaluate("""(root) => {
        const ctx = document.createElement('canvas').getContext('2d');
        const out = [];
        for (const i of root.querySelectorAll('input[placeholder]')) {
          const cs = getComputedStyle(i);
          ctx.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
          const room = i.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - (i.type === 'number' ? 18 : 0);
          if (i.offsetParent !== null && ctx.measureText(i.placeholder).width > room + 0.5) out.push(i.placeholder);
        }
        return out; }""")


def render_failure(page, root: Path, shot: Path, what: str, errors: list[str]) -> AssertionError:
    """When a notebook did not render: a screenshot at ``shot`` and an error that carries the cell
    outputs, the page's JavaScript errors and the tail of the JupyterLab log."""
    page.screenshot(path=str(shot))
    outputs = page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText.slice(0, 800))")
    log = (root / "jupyterlab.log").read_text(errors="replace")[-3000:]
    return AssertionError(f"{what}; outputs: {outputs}; errors: {errors}; JupyterLab log tail:\n{log}")
