"""The pack's frontend (web/) in headless Chromium against the real ComfyUI frontend of a test server.

Needs COMFYUI_ROOT, /usr/bin/chromium, /usr/bin/chromedriver and selenium; skips loudly with the fix
otherwise. Screenshots go to $AIG_ARTIFACTS (default <repo>/test-artifacts/), named by test.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops

from aig_testkit.browser import (
    Browser,
    BrowserError,
    artifacts_dir,
    browser_missing,
    quiet_server_settings,
    workflow_files,
)
from aig_testkit.comfy import install_model

pytestmark = pytest.mark.comfyui

REWARD_DIR = "aig_browser_pick"
SCHEDULE_TYPES = ("AIGSampler", "AIGGuider", "AIGSchedulePreview")
FAMILY_PARAMETERS = ("p", "switch", "centre", "width", "value")
CURVE = "aig_gamma_curve"  # the plot widget web/aig_schedule_nodes.js appends
WORKFLOWS = workflow_files()


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _first_workflow(*needed: str, any_of: tuple[str, ...] = ()) -> Path:
    """The first shipped workflow that has every type in `needed` (and one of `any_of`)."""
    for path in WORKFLOWS:
        types = {n["type"] for n in _load(path)["nodes"]}
        if set(needed) <= types and (not any_of or types & set(any_of)):
            return path
    pytest.fail(f"no workflow in workflows/ has {needed} and one of {any_of}")


@pytest.fixture(scope="module")
def site(comfy_server, sd15_checkpoint, sd15_lora):
    """The session server with fixture models installed and first-run dialogs turned off."""
    reason = browser_missing()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    from aig_testkit.reward_fixtures import build_pickscore_dir

    names = {"ckpt": install_model(comfy_server, "checkpoints", sd15_checkpoint),
             "lora": install_model(comfy_server, "loras", sd15_lora),
             "reward": f"{REWARD_DIR}/"}
    target = comfy_server.model_path("reward_models", REWARD_DIR)
    if not target.exists():
        build_pickscore_dir(target)
    quiet_server_settings(comfy_server.url)
    return comfy_server, names


@pytest.fixture()
def page(site, request):
    """A fresh ComfyUI page; a final screenshot named by test is saved whatever the outcome."""
    server, _ = site
    browser = Browser(server.url)
    browser.start()
    try:
        browser.open_app()
        yield browser
    finally:
        try:
            browser.screenshot(shot(request, "final"))
        except Exception as error:  # noqa: BLE001 - the browser may be what failed
            print(f"no final screenshot: {error}")
        browser.stop()


def shot(request, label: str) -> Path:
    """Artifact path <artifacts>/<test name>-<label>.png (parametrised ids made file-safe)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    return artifacts_dir() / f"{name}-{label}.png"


def our_errors(browser: Browser) -> list[str]:
    """Console errors and uncaught page errors that come from this pack's extension."""
    console = [m for m in browser.console_errors() if "comfy-aig" in m or "/extensions/comfy_aig/" in m]
    return console + [e for e in browser.page_errors() if "/extensions/comfy_aig/" in e]


def node_of_type(browser: Browser, node_type: str) -> int:
    return browser.js("return app.graph.nodes.find((n) => n.type === arguments[0]).id;", node_type)


def set_widget(browser: Browser, node_id: int, name: str, value) -> None:
    """Set a widget as the UI does (value, then its callback), and mark the canvas dirty."""
    browser.js("""
        const node = app.graph.getNodeById(arguments[0]);
        const widget = node.widgets.find((w) => w.name === arguments[1]);
        if (!widget) throw new Error(`node ${node.id} has no widget ${arguments[1]}`);
        widget.value = arguments[2];
        widget.callback?.(widget.value, app.canvas, node, app.canvas.graph_mouse, {});
        app.canvas.setDirty(true, true);
    """, node_id, name, value)


def use_fixture_models(browser: Browser, names: dict, batch: int = 3, steps: int = 3) -> None:
    """Point every model widget of the loaded workflow at the fixtures; tiny latents and few steps."""
    browser.js("""
        const [names, batch, steps] = arguments;
        const set = (node, name, value) => {
            const w = node.widgets?.find((w) => w.name === name);
            if (w) w.value = value;
        };
        for (const node of app.graph.nodes) {
            if (node.type === 'CheckpointLoaderSimple') set(node, 'ckpt_name', names.ckpt);
            if (node.type === 'LoraLoaderModelOnly') set(node, 'lora_name', names.lora);
            if (node.type === 'AIGSampler' || node.type === 'AIGGuider') {
                const lora = node.widgets.find((w) => w.name === 'lora_name');
                const tunedLinked = node.inputs.find((i) => i.name === 'tuned_model')?.link != null;
                if (lora) lora.value = tunedLinked ? 'None' : names.lora;
                set(node, 'steps', steps);
            }
            if (node.type === 'BasicScheduler') set(node, 'steps', steps);
            if (node.type === 'AIGRewardModelLoader') set(node, 'model_name', names.reward);
            if (node.type === 'EmptyLatentImage') {
                set(node, 'width', 64); set(node, 'height', 64); set(node, 'batch_size', batch);
            }
        }
        app.canvas.setDirty(true, true);
    """, names, batch, steps)


def click_run(browser: Browser) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    browser.driver.find_element(By.CSS_SELECTOR, "[data-testid='queue-button'] button").click()


def visible_family_widgets(browser: Browser, node_id: int) -> list[str]:
    return browser.js("""
        const node = app.graph.getNodeById(arguments[0]);
        return node.widgets.filter((w) => arguments[1].includes(w.name) && node.isWidgetVisible(w)).map((w) => w.name);
    """, node_id, list(FAMILY_PARAMETERS))


def count_pixels(image: Image.Image, test) -> int:
    """How many pixels of an RGB image pass test(r, g, b) (numpy arrays of int)."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    return int(test(rgb[..., 0], rgb[..., 1], rgb[..., 2]).sum())


# -- every workflow loads unchanged ------------------------------------------------------------------

@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_loads_with_its_widget_values_and_links(page, path, request):
    workflow = _load(path)
    page.load_workflow(workflow, path.stem)
    assert page.missing_node_types(workflow) == [], f"{path.name}: node types unknown to the frontend"
    page.fit_view()
    page.wait_for_curves()
    page.screenshot(shot(request, "loaded"))

    saved = page.serialized_graph()
    by_id = {n["id"]: n for n in saved["nodes"]}
    assert sorted(by_id) == sorted(n["id"] for n in workflow["nodes"])
    for node in workflow["nodes"]:
        again = by_id[node["id"]]
        assert again["type"] == node["type"]
        assert again.get("widgets_values", []) == node.get("widgets_values", []), (
            f"{path.name} node {node['id']} ({node['type']}): widget values changed on load")
        for key in ("color", "bgcolor", "properties", "title", "mode", "flags"):
            assert again.get(key) == node.get(key), f"{path.name} node {node['id']}: {key} changed on load"

    # a link is matched by the target input's name: the frontend lists every widget input, so a link into a
    # widget input (e.g. seed) keeps its input but may move to another slot index
    targets = [[link[0], link[1], link[2], link[3], _input_name(workflow, link[3], link[4])] for link in workflow["links"]]
    connected = page.js("""
        return arguments[0].map(([id, origin, originSlot, target, inputName]) => {
            const link = app.graph.links.get(id);
            const node = app.graph.getNodeById(target);
            const input = node.inputs.find((i) => i.name === inputName);
            return !!link && !!input && input.link === id && link.origin_id === origin &&
                link.origin_slot === originSlot && link.target_id === target &&
                node.inputs[link.target_slot] === input &&
                app.graph.getNodeById(origin).outputs[originSlot].links.includes(id);
        });
    """, targets)
    broken = [link for link, ok in zip(workflow["links"], connected) if not ok]
    assert not broken, f"{path.name}: links not connected after load: {broken}"
    assert len(saved["links"]) == len(workflow["links"])
    assert not our_errors(page), our_errors(page)


def _input_name(workflow: dict, node_id: int, slot: int) -> str:
    node = next(n for n in workflow["nodes"] if n["id"] == node_id)
    return node["inputs"][slot]["name"]


def test_hidden_widgets_serialise_back_identically(page):
    """Every workflow, loaded and serialised, loaded again from that: the same widgets_values both times."""
    for path in WORKFLOWS:
        workflow = _load(path)
        page.load_workflow(workflow, path.stem)
        first = page.serialized_graph()
        page.load_workflow(first, f"{path.stem} again")
        second = page.serialized_graph()
        values = {n["id"]: n.get("widgets_values") for n in workflow["nodes"]}
        assert {n["id"]: n.get("widgets_values") for n in first["nodes"]} == values, path.name
        assert {n["id"]: n.get("widgets_values") for n in second["nodes"]} == values, path.name
        assert first["links"] == second["links"], path.name
        assert [n.get("inputs") for n in first["nodes"]] == [n.get("inputs") for n in second["nodes"]], path.name


# -- the live plot -------------------------------------------------------------------------------------

def changed_pixels(a: Image.Image, b: Image.Image, threshold: int = 40) -> int:
    assert a.size == b.size, (a.size, b.size)
    return int((np.asarray(ImageChops.difference(a, b).convert("L")) > threshold).sum())


def test_changing_p_redraws_the_curve(page, request):
    path = _first_workflow("AIGSampler")
    page.load_workflow(_load(path), path.stem)
    node = node_of_type(page, "AIGSampler")
    set_widget(page, node, "schedule", "power")
    set_widget(page, node, "p", 2.0)
    page.focus_node(node, zoom=1.0)
    page.wait_for_curves()
    page.node_image(node).save(shot(request, "p2"))
    before = page.node_image(node, CURVE)
    assert page.js("return app.graph.getNodeById(arguments[0]).aigCurve.data.describe;", node) == "power(p=2)"

    type_into_number_widget(page, node, "p", "0.5")
    assert page.js("return app.graph.getNodeById(arguments[0]).widgets.find((w) => w.name === 'p').value;", node) == 0.5
    page.wait_for_curves()
    page.node_image(node).save(shot(request, "p0.5"))
    after = page.node_image(node, CURVE)
    state = page.js("const s = app.graph.getNodeById(arguments[0]).aigCurve; return [s.data.describe, s.error];", node)
    assert state == ["power(p=0.5)", None]
    changed = changed_pixels(before, after)
    assert changed > 300, f"only {changed} pixels of the plot changed when p went 2 -> 0.5"

    # a window [0.2, 0.8]: shaded band, flat outside it
    set_widget(page, node, "window_start", 0.2)
    set_widget(page, node, "window_end", 0.8)
    page.wait_for_curves()
    page.node_image(node).save(shot(request, "window"))
    windowed = page.node_image(node, CURVE)
    assert page.js("return app.graph.getNodeById(arguments[0]).aigCurve.data.describe;", node) == \
        "power(p=0.5) window [0.2, 0.8]"
    assert changed_pixels(after, windowed, threshold=8) > 300, "the window is not drawn"


def test_invalid_window_shows_the_route_message_in_red(page, request):
    path = _first_workflow("AIGSampler")
    page.load_workflow(_load(path), path.stem)
    node = node_of_type(page, "AIGSampler")
    page.focus_node(node, zoom=1.0)
    set_widget(page, node, "window_start", 0.8)
    set_widget(page, node, "window_end", 0.2)
    page.wait_for_curves()
    error = page.js("return app.graph.getNodeById(arguments[0]).aigCurve.error;", node)
    assert error and "window start (0.8) must be below window end (0.2)" in error
    page.node_image(node).save(shot(request, "error"))
    red = count_pixels(page.node_image(node, CURVE), lambda r, g, b: (r > 200) & (g < 120) & (b < 120))
    assert red > 50, "the error message is not drawn in red on the node"


# -- family-dependent widgets -------------------------------------------------------------------------

def click_widget(page: Browser, node_id: int, widget: str) -> None:
    """Click the middle of a widget on the canvas, as a user does."""
    from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    x, y = page.js("""
        const node = app.graph.getNodeById(arguments[0]);
        const widget = node.widgets.find((w) => w.name === arguments[1]);
        const H = window.LiteGraph.NODE_WIDGET_HEIGHT;
        const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, node.pos[1] + widget.y + H / 2]);
        const rect = app.canvas.canvas.getBoundingClientRect();
        return [rect.left + cx, rect.top + cy];
    """, node_id, widget)
    body = page.driver.find_element(By.TAG_NAME, "body")
    size = body.size
    ActionChains(page.driver).move_to_element_with_offset(
        body, int(x - size["width"] / 2), int(y - size["height"] / 2)).click().perform()


def choose_from_combo(page: Browser, node_id: int, widget: str, option: str) -> None:
    """Click a combo widget and pick an entry from LiteGraph's menu."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    click_widget(page, node_id, widget)
    page.wait_for("return [...document.querySelectorAll('.litecontextmenu .litemenu-entry')].some("
                  "(e) => e.textContent.trim() === arguments[0]);", option, what=f"the '{option}' menu entry")
    for entry in page.driver.find_elements(By.CSS_SELECTOR, ".litecontextmenu .litemenu-entry"):
        if entry.text.strip() == option:
            entry.click()
            break
    page.park_mouse()
    page.settle()


def type_into_number_widget(page: Browser, node_id: int, widget: str, value: str) -> None:
    """Click a number widget's middle, type a value into LiteGraph's prompt and press Enter."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415

    click_widget(page, node_id, widget)
    page.wait_for("return document.querySelector('.graphdialog input.value');", what=f"the prompt for {widget}")
    field = page.driver.find_element(By.CSS_SELECTOR, ".graphdialog input.value")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(value, Keys.ENTER)
    page.park_mouse()
    page.settle()


def test_step_family_shows_only_switch(page, request):
    path = _first_workflow("AIGSampler")
    workflow = _load(path)
    page.load_workflow(workflow, path.stem)
    node = node_of_type(page, "AIGSampler")
    page.focus_node(node, zoom=1.0)
    assert visible_family_widgets(page, node) == ["p"] or _schedule_of(workflow, node) != "power"
    choose_from_combo(page, node, "schedule", "step")
    assert page.js("return app.graph.getNodeById(arguments[0]).widgets.find((w) => w.name === 'schedule').value;",
                   node) == "step"
    page.wait_for_curves()
    assert visible_family_widgets(page, node) == ["switch"]
    page.node_image(node).save(shot(request, "step"))
    assert page.js("return app.graph.getNodeById(arguments[0]).aigCurve.data.describe;", node) == "step(switch=0.5)"

    # hidden widgets still hold and save their values: only the schedule entry differs from the file
    saved = next(n for n in page.serialized_graph()["nodes"] if n["id"] == node)
    original = next(n for n in workflow["nodes"] if n["id"] == node)["widgets_values"]
    changed = [i for i, (a, b) in enumerate(zip(saved["widgets_values"], original)) if a != b]
    assert len(saved["widgets_values"]) == len(original) and len(changed) == 1
    assert saved["widgets_values"][changed[0]] == "step"

    for family, visible in (("sigmoid", ["centre", "width"]), ("linear", []), ("constant", ["value"]),
                            ("power", ["p"])):
        set_widget(page, node, "schedule", family)
        page.settle()
        assert visible_family_widgets(page, node) == visible, family


def test_connecting_tuned_model_switches_the_lora_file_off(page, request):
    path = _first_workflow("AIGSampler", "CheckpointLoaderSimple")
    page.load_workflow(_load(path), path.stem)
    node = page.js("return app.graph.nodes.find((n) => n.type === 'AIGSampler' && "
                   "!n.inputs.find((i) => i.name === 'tuned_model').link).id;")

    def lora_widgets():  # [[value, hidden], ...] of lora_name and lora_strength
        return page.js("""
            const n = app.graph.getNodeById(arguments[0]);
            return ['lora_name', 'lora_strength'].map((k) => {
                const w = n.widgets.find((w) => w.name === k);
                return [w.value, Boolean(w.hidden)];
            });""", node)

    (chosen, _), (strength, _) = lora_widgets()
    assert chosen != "None", f"{path.name} should use a LoRA file on its AIGSampler"
    assert lora_widgets() == [[chosen, False], [strength, False]]
    page.js("""
        const n = app.graph.getNodeById(arguments[0]);
        app.graph.nodes.find((m) => m.type === 'CheckpointLoaderSimple').connect(0, n, n.findInputSlot('tuned_model'));
    """, node)
    page.settle()
    assert lora_widgets() == [["None", True], [strength, True]], "a connected tuned_model must switch the file off"
    page.node_image(node).save(shot(request, "tuned-linked"))
    saved = next(n for n in page.serialized_graph()["nodes"] if n["id"] == node)
    assert "None" in saved["widgets_values"] and chosen not in saved["widgets_values"]
    page.js("const n = app.graph.getNodeById(arguments[0]); n.disconnectInput(n.findInputSlot('tuned_model'));", node)
    page.settle()
    assert lora_widgets() == [[chosen, False], [strength, False]], "disconnecting must bring the file back"


def _schedule_of(workflow: dict, node_id: int) -> str:
    node = next(n for n in workflow["nodes"] if n["id"] == node_id)
    return next(v for v in node["widgets_values"] if v in ("power", "linear", "step", "sigmoid", "cosine", "constant"))


# -- running a workflow --------------------------------------------------------------------------------

def wait_for_run(page: Browser, timeout: float = 240.0) -> None:
    page.wait_for("return window.__aigRun && window.__aigRun.done;", what="the run to finish", timeout=timeout)
    state = page.js("return window.__aigRun;")
    if state.get("error"):
        raise BrowserError(f"the run failed: {state['error']}")


def watch_run(page: Browser) -> None:
    """Record the end of the next run (success or error) in window.__aigRun."""
    page.js("""
        const api = window.comfyAPI.api.api;
        window.__aigRun = {done: false, error: null};
        api.addEventListener('execution_success', () => { window.__aigRun.done = true; }, {once: true});
        api.addEventListener('execution_error', (e) => {
            window.__aigRun.error = `${e.detail.node_type}: ${e.detail.exception_message}`;
            window.__aigRun.done = true;
        }, {once: true});
    """)


def test_run_button_shows_images_scores_and_text(page, site, request):
    _, names = site
    path = _first_workflow("AIGSampler", "AIGRankImages")
    page.load_workflow(_load(path), path.stem)
    use_fixture_models(page, names, batch=3, steps=3)
    # beside the workflow's Rank node: a Score node on the same images and reward model, and a schedule
    # preview feeding a PreviewImage, so that every kind of result shows on its node
    preview = page.js("""
        const add = (type, pos) => {
            const node = window.LiteGraph.createNode(type);
            node.pos = pos;
            app.graph.add(node);
            return node;
        };
        const rank = app.graph.nodes.find((n) => n.type === 'AIGRankImages');
        const source = (name) => app.graph.links.get(rank.inputs.find((i) => i.name === name).link);
        const right = Math.max(...app.graph.nodes.map((n) => n.pos[0] + n.size[0]));
        const score = add('AIGScoreImages', [right + 60, rank.pos[1]]);
        for (const name of ['images', 'reward_model']) {
            const link = source(name);
            app.graph.getNodeById(link.origin_id).connect(link.origin_slot, score, score.findInputSlot(name));
        }
        const prompt = (node) => node.widgets.find((w) => w.name === 'prompt');
        prompt(score).value = prompt(rank).value;  // same prompt, same scores
        const node = add('AIGSchedulePreview', [0, -700]);
        const image = add('PreviewImage', [420, -700]);
        node.connect(0, image, 0);
        node.widgets.find((w) => w.name === 'steps').value = 8;
        return node.id;
    """)
    watch_run(page)
    click_run(page)
    wait_for_run(page)
    page.fit_view()  # the frontend loads a node's images when it draws the node

    scored = page.js("return app.graph.nodes.filter((n) => n.type === 'AIGRankImages' || n.type === 'AIGScoreImages')"
                     ".map((n) => n.id);")
    for node in scored:
        page.focus_node(node, zoom=1.0)
        page.wait_for("""
            const node = app.graph.getNodeById(arguments[0]);
            const text = node.widgets?.find((w) => w.name === 'aig_result_text');
            return node.aigScores?.length === 3 && node.imgs?.length === 3 &&
                node.imgs.every((img) => img.complete && img.naturalWidth > 0) && text && text.value.length > 0;
        """, node, what=f"images, scores and text on node {node}")
        text = page.js("return app.graph.getNodeById(arguments[0]).widgets.find((w) => w.name === 'aig_result_text')"
                       ".value;", node)
        assert "over 3 image(s)" in text
        scores = page.js("return app.graph.getNodeById(arguments[0]).aigScores;", node)
        if page.js("return app.graph.getNodeById(arguments[0]).type;", node) == "AIGRankImages":
            assert scores == sorted(scores, reverse=True), "Rank previews are not best first"
            assert "best first" in text
        image = page.node_image(node)
        image.save(shot(request, f"scores-node{node}"))
        labels = count_pixels(image, lambda r, g, b: (r > 230) & (g > 200) & (g < 245) & (b > 90) & (b < 150))
        assert labels > 60, f"no score labels drawn on the previews of node {node}"

    by_type = dict(page.js("return app.graph.nodes.filter((n) => n.aigScores).map((n) => [n.type, n.aigScores]);"))
    assert set(by_type) == {"AIGRankImages", "AIGScoreImages"}
    assert by_type["AIGRankImages"] == pytest.approx(sorted(by_type["AIGScoreImages"], reverse=True), abs=1e-4)

    page.wait_for("const n = app.graph.getNodeById(arguments[0]); "
                  "return n.widgets.find((w) => w.name === 'aig_result_text')?.value;", preview,
                  what="the schedule preview's text")
    preview_text = page.js("return app.graph.getNodeById(arguments[0]).widgets.find("
                           "(w) => w.name === 'aig_result_text').value;", preview)
    assert preview_text.startswith("power(p=2):") and preview_text.count(",") == 7
    page.fit_view()
    page.wait_for("""
        const outputs = app.graph.nodes.filter((n) => n.type === 'SaveImage' || n.type === 'PreviewImage');
        return outputs.length && outputs.every((n) => n.imgs?.length && n.imgs.every((i) => i.naturalWidth > 0));
    """, what="every SaveImage / PreviewImage to show its images")
    page.fit_view()
    page.screenshot(shot(request, "after-run"))
    assert not our_errors(page), our_errors(page)


RESULT_TYPES = ("AIGScoreImages", "AIGRankImages")


def overlapping_nodes(page: Browser) -> list[str]:
    """Pairs of nodes whose boxes (title bar included) overlap in graph coordinates, with position + size."""
    return page.js("""
        const title = window.LiteGraph.NODE_TITLE_HEIGHT;
        const label = (n) => `${n.id} ${n.type} at ${n.pos.map(Math.round)} size ${n.size.map(Math.round)}`;
        const boxes = app.graph.nodes.map((n) => [n, n.pos[0], n.pos[1] - title, n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
        const found = [];
        for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
            const [a, ax0, ay0, ax1, ay1] = boxes[i], [b, bx0, by0, bx1, by1] = boxes[j];
            if (ax0 < bx1 && bx0 < ax1 && ay0 < by1 && by0 < ay1) found.push(`${label(a)} / ${label(b)}`);
        }
        return found;
    """)


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if {n["type"] for n in _load(p)["nodes"]} & set(RESULT_TYPES)],
                         ids=lambda p: p.stem)
def test_results_fit_the_layout_after_a_run(page, site, request, path):
    _, names = site
    page.load_workflow(_load(path), path.stem)
    page.fit_view()
    assert not overlapping_nodes(page), f"{path.name} overlaps as loaded: {overlapping_nodes(page)}"
    use_fixture_models(page, names, batch=4, steps=2)
    watch_run(page)
    click_run(page)
    wait_for_run(page)
    page.fit_view()  # the frontend loads a node's images when it draws the node
    page.wait_for("""
        const nodes = app.graph.nodes.filter((n) => arguments[0].includes(n.type));
        return nodes.every((n) => n.imgs?.length && n.imgs.every((i) => i.naturalWidth > 0)
                                  && n.widgets.find((w) => w.name === arguments[1])?.value);
    """, list(RESULT_TYPES), "aig_result_text", what="every Score / Rank node to show its images and text")
    page.settle()
    page.screenshot(shot(request, "after-run"))
    assert not overlapping_nodes(page), f"after a run: {overlapping_nodes(page)}"


BAD_VALUES = {
    # a user mistake in the UI: no LoRA file and no tuned_model connected (AIGSampler's validate_inputs)
    "no_tuned_model": ({"lora_name": "None"}, "prompt", None),
    # a hand-edited workflow: a family that does not exist (ComfyUI's own list check; the widgets clamp
    # numbers to their range, so an out-of-range number cannot be submitted from the frontend)
    "unknown_family": ({"schedule": "quadratic"}, "prompt", "'quadratic' not in"),
    # the window's order, checked when the node runs (and drawn in red on the node beforehand)
    "window_order": ({"window_start": 0.8, "window_end": 0.2}, "run", "must be below window end (0.2)"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_value_gives_exactly_one_message(page, site, request, case):
    _, names = site
    values, stage, expected = BAD_VALUES[case]
    path = _first_workflow("AIGSampler")
    page.load_workflow(_load(path), path.stem)
    use_fixture_models(page, names)
    node = page.js("return app.graph.nodes.find((n) => n.type === 'AIGSampler' && "
                   "!n.inputs.find((i) => i.name === 'tuned_model').link).id;")
    for name, value in values.items():
        set_widget(page, node, name, value)
    page.wait_for_curves()
    watch_run(page)
    click_run(page)
    if stage == "prompt":
        errors = page.wait_for("return window.comfyAPI.app.app.lastNodeErrors;", what="the /prompt validation errors")
        assert list(errors) == [str(node)], f"errors on other nodes too: {json.dumps(errors)[:2000]}"
        found = errors[str(node)]["errors"]
        assert len(found) == 1, f"expected one message, got {json.dumps(found)}"
        message = found[0].get("details") or found[0]["message"]
    else:
        page.wait_for("return window.__aigRun.done;", what="the run to fail")
        message = page.js("return window.__aigRun.error;")
        assert message, "the run did not fail"
        curve_error = page.js("return app.graph.getNodeById(arguments[0]).aigCurve.error;", node)
        assert curve_error and curve_error in message, "the node's plot and the run disagree on the message"
    if expected:
        assert expected in message
    dialog = page.wait_for("return [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText).join('\\n');",
                           what="the error dialog")
    time.sleep(0.5)
    page.screenshot(shot(request, "dialog"))
    key = message.split(":")[-1].strip()[:60] or message[:60]
    dialog = page.js("return [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText).join('\\n');")
    assert dialog.count(key) == 1, f"'{key}' shown {dialog.count(key)} times:\n{dialog}"


# -- template browser ----------------------------------------------------------------------------------

def test_template_browser_shows_the_pack_thumbnails_in_number_order(page, request):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    missing = [p.name for p in WORKFLOWS if not p.with_suffix(".jpg").is_file()]
    assert not missing, f"no thumbnail for {missing}: run python tests/aig_testkit/browser.py thumbnails"
    page.network_responses()  # drop what came before
    page.driver.find_element(By.CSS_SELECTOR, ".templates-tab-button").click()
    page.wait_for("return [...document.querySelectorAll('.p-listbox-option')].some("
                  "(e) => e.textContent.trim() === 'comfy_aig');", what="the comfy_aig template category")
    for option in page.driver.find_elements(By.CSS_SELECTOR, ".p-listbox-option"):
        if option.text.strip() == "comfy_aig":
            option.click()
            break
    page.wait_for("return document.querySelectorAll(\"[data-testid^='template-workflow-']\").length === arguments[0];",
                  len(WORKFLOWS), what=f"{len(WORKFLOWS)} template cards")
    names = page.js("return [...document.querySelectorAll(\"[data-testid^='template-workflow-']\")].map("
                    "(e) => e.dataset.testid.slice('template-workflow-'.length));")
    numbered = sorted(WORKFLOWS, key=lambda p: (int(p.stem.split(" ", 1)[0]), p.stem))  # "1 ...", "2 ...", ...
    assert names == [p.stem for p in numbered], "the template browser must list the workflows simplest (1) first"
    for name in names:  # cards load their image when scrolled into view
        page.js("document.querySelector(`[data-testid='template-workflow-${CSS.escape(arguments[0])}']`)"
                ".scrollIntoView();", name)
        page.wait_for("""
            const card = document.querySelector(`[data-testid='template-workflow-${CSS.escape(arguments[0])}']`);
            const img = card && card.querySelector('img');
            return img && img.complete && img.naturalWidth > 0;
        """, name, what=f"the thumbnail of '{name}'", timeout=20)
    page.js("document.querySelector(\"[data-testid^='template-workflow-']\").scrollIntoView();")
    page.screenshot(shot(request, "templates"))
    thumbs = [r for r in page.network_responses() if "/workflow_templates/comfy_aig/" in r["url"]]
    assert thumbs and all(r["status"] == 200 for r in thumbs), thumbs
