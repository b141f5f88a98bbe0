"""Headless-Chromium harness for the pack's frontend (web/): Selenium + Debian's chromium/chromedriver against
the real ComfyUI frontend that a test server (aig_testkit.comfy.ComfyServer) serves.

- ``browser_missing()``: why the browser tests cannot run here (and the fix), or None.
- ``Browser``: one headless Chromium session; page helpers for the ComfyUI app (load a workflow, find nodes,
  crop a node out of a screenshot, read the console).
- ``python tests/aig_testkit/browser.py thumbnails``: starts a server, loads every workflows/*.json and
  writes workflows/<name>.jpg (the canvas, ~560 px wide) for the template browser. Needs COMFYUI_ROOT.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_FIX = "apt-get install -y chromium chromium-driver"
APP = "window.comfyAPI.app.app"  # the ComfyUI app object, from the frontend's legacy API shim
THUMBNAIL_WIDTH = 560
THUMBNAIL_WINDOW = (1600, 1100)  # rendered at this size, then scaled down

# Settings written before the page opens, so no first-run dialog or overlay covers the canvas.
QUIET_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Toast.DisableReconnectingToast": True,
    "Comfy.UseNewMenu": "Top",
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,  # full-detail nodes at any zoom (screenshots, thumbnails)
}


def browser_missing() -> str | None:
    """The reason the browser tests cannot run here and how to fix it, or None when they can."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        return f"headless browser not installed ({', '.join(missing)} missing); fix: {INSTALL_FIX}"
    try:
        import selenium  # noqa: F401, PLC0415 - optional dev dependency
    except ImportError:
        return "selenium is not installed; fix: pip install -e '.[dev]' (or pip install selenium)"
    return None


def artifacts_dir() -> Path:
    """Folder for screenshots: $AIG_ARTIFACTS, default <repo>/test-artifacts/ (created)."""
    path = Path(os.environ.get("AIG_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def workflow_files() -> list[Path]:
    """Every shipped workflow (workflows/*.json), sorted by name."""
    return sorted(WORKFLOWS.glob("*.json"))


def quiet_server_settings(base_url: str) -> None:
    """Store QUIET_SETTINGS for the server's default user (ComfyUI's /settings route)."""
    import requests  # noqa: PLC0415

    response = requests.post(f"{base_url}/settings", json=QUIET_SETTINGS, timeout=30)
    response.raise_for_status()


# Installed before any page script: keeps uncaught errors and rejections with their stacks (window.__aigErrors).
ERROR_RECORDER = """
window.__aigErrors = [];
window.addEventListener('error', (e) => window.__aigErrors.push(String(e.error && e.error.stack || e.message)));
window.addEventListener('unhandledrejection', (e) => window.__aigErrors.push(
  'unhandled rejection: ' + String(e.reason && e.reason.stack || e.reason)));
"""


class BrowserError(AssertionError):
    """A page did not reach the expected state; the message says which and includes the console."""


class Browser:
    """A headless Chromium session on a ComfyUI server; stop() ends it (use as a context manager)."""

    def __init__(self, base_url: str, width: int = 1500, height: int = 1000, timeout: float = 60.0):
        self.base_url = base_url
        self.width, self.height = width, height
        self.timeout = timeout
        self.driver = None
        self._console: list[dict] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Browser:
        from selenium import webdriver  # noqa: PLC0415
        from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--force-device-scale-factor=1", "--hide-scrollbars", "--mute-audio",
                    f"--window-size={self.width},{self.height}", "--lang=en-US"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_RECORDER})
        self.driver.set_page_load_timeout(self.timeout)
        self.driver.set_script_timeout(self.timeout)
        return self

    def stop(self) -> None:
        if self.driver is not None:
            try:
                self.driver.quit()
            finally:
                self.driver = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- page ----------------------------------------------------------------------------------
    def open_app(self) -> None:
        """Open the ComfyUI page and wait until the app, its graph and this pack's extension are ready."""
        self.driver.get(self.base_url)
        self.wait_for(f"return !!(window.comfyAPI && {APP} && {APP}.graph && {APP}.canvas && window.comfyAIG"
                      " && window.comfyAIG.ready && window.comfyAIG.families())",
                      what="the ComfyUI app with its node types and the comfy-aig extension")
        self.wait_for("return !document.querySelector('.p-dialog-mask')", what="no dialog on start", timeout=20)

    def js(self, script: str, *args):
        """Run synchronous JavaScript (the app object is `app`); returns its result."""
        return self.driver.execute_script(f"const app = {APP};\n{script}", *args)

    def js_async(self, script: str, *args):
        """Run an async function body (`await` allowed, `app` defined); returns what it returns.
        A thrown error comes back as BrowserError with its message."""
        wrapped = (f"const done = arguments[arguments.length - 1]; const app = {APP};\n"
                   f"(async (...args) => {{ {script} }})(...Array.from(arguments).slice(0, -1))"
                   ".then((value) => done({ok: true, value}), (error) => done({ok: false, error: String(error && "
                   "error.stack || error)}));")
        answer = self.driver.execute_async_script(wrapped, *args)
        if not answer["ok"]:
            raise BrowserError(f"script failed: {answer['error']}\n{self.console_text()}")
        return answer["value"]

    def wait_for(self, condition: str, *args, what: str, timeout: float | None = None):
        """Poll a JavaScript expression body (`return ...`) until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last_error = None
        while time.monotonic() < deadline:
            try:
                value = self.driver.execute_script(
                    f"const app = window.comfyAPI && {APP};\n{condition}", *args)
                if value:
                    return value
            except Exception as error:  # the page may be navigating  # noqa: BLE001
                last_error = error
            time.sleep(0.2)
        raise BrowserError(f"timed out after {timeout or self.timeout}s waiting for {what}"
                           f"{f' (last error: {last_error})' if last_error else ''}\n{self.console_text()}")

    def settle(self, frames: int = 3) -> None:
        """Force a full redraw and let a few animation frames pass."""
        self.js_async(f"app.canvas.setDirty(true, true); for (let i = 0; i < {frames}; i++) "
                      "await new Promise((r) => requestAnimationFrame(r));")

    # -- workflows -----------------------------------------------------------------------------
    def load_workflow(self, workflow: dict, name: str = "workflow") -> None:
        """app.loadGraphData (no missing-node/model dialogs: callers check the graph themselves)."""
        self.js_async("await app.loadGraphData(args[0], true, true, args[1], "
                      "{showMissingNodesDialog: false, showMissingModelsDialog: false});", workflow, name)
        self.settle()

    def serialized_graph(self) -> dict:
        return self.js("return app.graph.serialize();")

    def missing_node_types(self, workflow: dict) -> list[str]:
        """Types of the workflow that the frontend has not registered (no node definition)."""
        types = sorted({n["type"] for n in workflow["nodes"]})
        return self.js("return arguments[0].filter((t) => !window.LiteGraph.registered_node_types[t]);", types)

    def fit_view(self) -> None:
        """Comfy.Canvas.FitView, waiting out its animation (350 ms in frontend 1.27; it would undo a later zoom)."""
        self.js_async("""
            await app.extensionManager.command.execute('Comfy.Canvas.FitView');
            const view = () => JSON.stringify([app.canvas.ds.scale, ...app.canvas.ds.offset]);
            const start = performance.now();
            let last = null;
            while (performance.now() - start < 5000) {
                await new Promise((r) => requestAnimationFrame(r));
                const now = view();
                if (now === last && performance.now() - start > 400) break;
                last = now;
            }
        """)
        self.settle()

    def wait_for_curves(self, timeout: float = 30.0) -> None:
        """Until every schedule node's plot shows its current values (or their error)."""
        self.wait_for("""
            const nodes = app.graph.nodes.filter((n) => n.aigCurve);
            nodes.forEach((n) => window.comfyAIG.refreshCurve(n));  // pick up changes not drawn yet
            return nodes.every((n) => n.aigCurve.linked.length ||
                (n.aigCurve.query && n.aigCurve.shown === n.aigCurve.query));
        """, what="the gamma plots to be drawn", timeout=timeout)
        self.settle()

    # -- pictures ------------------------------------------------------------------------------
    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path

    def node_box(self, node_id) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) page pixels of a node, title bar included."""
        box = self.js("""
            const node = app.graph.getNodeById(arguments[0]);
            const rect = app.canvas.canvas.getBoundingClientRect();
            const title = window.LiteGraph.NODE_TITLE_HEIGHT;
            const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - title]);
            const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0], node.pos[1] + node.size[1]]);
            return [rect.left + x0, rect.top + y0, rect.left + x1, rect.top + y1].map(Math.round);
        """, node_id)
        return tuple(box)

    def widget_box(self, node_id, widget: str) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) page pixels of one widget of a node, as last laid out."""
        box = self.js("""
            const node = app.graph.getNodeById(arguments[0]);
            const w = node.widgets.find((w) => w.name === arguments[1]);
            const rect = app.canvas.canvas.getBoundingClientRect();
            const height = w.computedHeight ?? window.LiteGraph.NODE_WIDGET_HEIGHT;
            const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] + w.y]);
            const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0], node.pos[1] + w.y + height]);
            return [rect.left + x0, rect.top + y0, rect.left + x1, rect.top + y1].map(Math.round);
        """, node_id, widget)
        return tuple(box)

    def node_image(self, node_id, widget: str | None = None):
        """PIL image of one node (or one of its widgets) cropped from a screenshot of the page."""
        from PIL import Image  # noqa: PLC0415

        self.settle()
        page = Image.open(io.BytesIO(self.driver.get_screenshot_as_png())).convert("RGB")
        left, top, right, bottom = self.widget_box(node_id, widget) if widget else self.node_box(node_id)
        return page.crop((max(0, left), max(0, top), min(page.width, right), min(page.height, bottom)))

    def graph_box(self, padding: int = 16) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) page pixels around every node and group of the graph."""
        box = self.js("""
            const rect = app.canvas.canvas.getBoundingClientRect();
            const title = window.LiteGraph.NODE_TITLE_HEIGHT;
            const corners = app.graph.nodes.flatMap((n) => [[n.pos[0], n.pos[1] - title],
                                                            [n.pos[0] + n.size[0], n.pos[1] + n.size[1]]]);
            const points = corners.map((p) => app.canvas.ds.convertOffsetToCanvas(p));
            const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
            return [Math.min(...xs) + rect.left, Math.min(...ys) + rect.top,
                    Math.max(...xs) + rect.left, Math.max(...ys) + rect.top].map(Math.round);
        """)
        return box[0] - padding, box[1] - padding, box[2] + padding, box[3] + padding

    def park_mouse(self) -> None:
        """Move the pointer to an empty spot on the right (no hover tooltip over a focused node)."""
        from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        body = self.driver.find_element(By.TAG_NAME, "body")
        ActionChains(self.driver).move_to_element_with_offset(body, int(body.size["width"] * 0.4), 0).perform()

    def focus_node(self, node_id, zoom: float = 1.0) -> None:
        """Centre the canvas on a node at a given zoom (so it is on screen for screenshots)."""
        self.js("""
            const node = app.graph.getNodeById(arguments[0]);
            const ds = app.canvas.ds;
            ds.scale = arguments[1];
            const rect = app.canvas.canvas.getBoundingClientRect();
            ds.offset[0] = rect.width / (2 * ds.scale) - node.pos[0] - node.size[0] / 2;
            ds.offset[1] = rect.height / (2 * ds.scale) - node.pos[1] - node.size[1] / 2;
            app.canvas.setDirty(true, true);
        """, node_id, zoom)
        self.settle()
        scale = self.js("return app.canvas.ds.scale;")
        if abs(scale - zoom) > 1e-6:  # an animation of the view still running would crop the wrong pixels
            raise BrowserError(f"the canvas zoom is {scale}, not {zoom}, after focusing node {node_id}")

    # -- console -------------------------------------------------------------------------------
    def console(self) -> list[dict]:
        """Every browser console entry so far ({level, message})."""
        self._console.extend(self.driver.get_log("browser"))
        return list(self._console)

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.console() if e["level"] == "SEVERE"]

    def page_errors(self) -> list[str]:
        """Uncaught errors and unhandled rejections of the page, with stacks."""
        return self.driver.execute_script("return window.__aigErrors || [];")

    def console_text(self, last: int = 30) -> str:
        try:
            entries = self.console()[-last:]
        except Exception:  # noqa: BLE001 - the browser may be gone
            return "(no console)"
        return "browser console:\n" + "\n".join(f"  {e['level']}: {e['message'][:500]}" for e in entries)

    def network_responses(self) -> list[dict]:
        """(url, status) of every response seen since the last call (Chrome's performance log)."""
        found = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.responseReceived":
                response = message["params"]["response"]
                found.append({"url": response["url"], "status": response["status"]})
        return found


# -- thumbnails ------------------------------------------------------------------------------------
THUMBNAIL_CSS = """
  .side-tool-bar-container, .comfyui-menu, .actionbar, .comfy-menu, .p-toast, .graph-canvas-menu,
  .comfyui-body-bottom, .bottom-panel, .workflow-tabs-container, .splitter-overlay-root > .p-splitter-gutter
  { visibility: hidden !important; }
"""


def write_thumbnails(browser: Browser, files: list[Path], out_dir: Path) -> list[Path]:
    """Load each workflow, fit it to the window and save the canvas as <out_dir>/<name>.jpg."""
    from PIL import Image  # noqa: PLC0415

    written = []
    browser.js("const s = document.createElement('style'); s.textContent = arguments[0]; "
               "document.head.appendChild(s); app.canvas.show_info = false;", THUMBNAIL_CSS)
    for file in files:
        workflow = json.loads(file.read_text(encoding="utf-8"))
        browser.load_workflow(workflow, file.stem)
        missing = browser.missing_node_types(workflow)
        if missing:
            raise BrowserError(f"{file.name}: node types not registered: {missing}")
        browser.fit_view()
        browser.wait_for_curves()
        page = Image.open(io.BytesIO(browser.driver.get_screenshot_as_png())).convert("RGB")
        left, top, right, bottom = browser.graph_box()
        graph = page.crop((max(0, left), max(0, top), min(page.width, right), min(page.height, bottom)))
        scale = THUMBNAIL_WIDTH / graph.width
        thumb = graph.resize((THUMBNAIL_WIDTH, round(graph.height * scale)), Image.LANCZOS)
        target = out_dir / f"{file.stem}.jpg"
        thumb.save(target, "JPEG", quality=85, optimize=True)
        written.append(target)
        print(f"wrote {target} ({thumb.width}x{thumb.height})")
    return written


USAGE = """usage: python tests/aig_testkit/browser.py thumbnails [--out DIR]
  Writes <DIR>/<workflow name>.jpg for every workflows/*.json (DIR defaults to workflows/). Needs COMFYUI_ROOT."""


def main(argv: list[str]) -> int:
    if argv[:1] != ["thumbnails"] or len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--out"):
        print(USAGE, file=sys.stderr)
        return 2
    out_dir = Path(argv[2]) if len(argv) == 3 else WORKFLOWS
    out_dir.mkdir(parents=True, exist_ok=True)
    reason = browser_missing()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    sys.path.insert(0, str(REPO / "tests"))
    import tempfile  # noqa: PLC0415

    from aig_testkit.comfy import ComfyServer, comfyui_root  # noqa: PLC0415

    root = comfyui_root()
    if root is None:
        print("COMFYUI_ROOT is not set: point it at a ComfyUI checkout", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="aig_thumbs_"))
    server = ComfyServer(root, base).start()
    try:
        quiet_server_settings(server.url)
        with Browser(server.url, width=THUMBNAIL_WINDOW[0], height=THUMBNAIL_WINDOW[1]) as browser:
            browser.open_app()
            write_thumbnails(browser, workflow_files(), out_dir)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
