"""The page at `/`: served from the package with local assets only; in a real headless Chromium it loads with no
request beyond 127.0.0.1, a submitted form draws its charts, and the plan form draws POST /v1/plans's answer (the
ranked plans, the Pareto frontier, the rejections; an impossible request's reasons; a 422's field and message).

The browser tests need Debian's chromium (/usr/bin/chromium, or MEMPLAN_CHROMIUM) and the playwright package (the
test extra; it drives the system chromium, it downloads no browser); they skip without chromium (`make test` on a
bare machine). .ci/run installs chromium and sets MEMPLAN_REQUIRE_BROWSER=1, so there they fail rather than skip.
They leave screenshots at benchmarks/results/page.png and page-plans.png (CI artifacts; docs/page.png and
docs/page-plans.png are copies, made smaller with pngquant).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.app import create_app
from service.docs import REDOC_CDN_LOGO, REDOC_JS_URL
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "benchmarks" / "results" / "page.png"
PLANS_SCREENSHOT = ROOT / "benchmarks" / "results" / "page-plans.png"
STATIC = resources.files("service").joinpath("static")
VENDOR = STATIC.joinpath("vendor", "chart.js")
# service/static/vendor/chart.js/VENDOR.md: chart.js 4.6.1 from the npm registry, files copied unchanged
CHART_JS_SHA256 = "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"
LICENSE_SHA256 = "41a84aa2caba645f966a18d9c2056b73e6d3a81d80bc0046bc0011a2634d4cce"
ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
# The flags Debian's chromium needs on a machine with no network beyond the loopback (no background fetches).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
DRAW_TIMEOUT_MS = 90_000


def test_page_is_served_with_local_assets_only(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?://|//[a-z]", html, re.IGNORECASE), "a non-local URL in the page"
    assets = {m.group(1) for m in ASSET.finditer(html)} - {"data:,"}
    assert "static/vendor/chart.js/chart.umd.min.js" in assets
    for asset in assets:
        assert not asset.startswith(("/", "http")), asset  # relative: works behind a proxy's root_path too
        loaded = client.get(f"/{asset}")
        assert loaded.status_code == 200, asset
        assert loaded.content


def test_page_scripts_name_no_other_host() -> None:
    for name in ("page.js", "page.css", "index.html"):
        text = STATIC.joinpath(name).read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), name


class _Elements(HTMLParser):
    """The attributes of every element with an id, and the values of every option."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str | None]] = {}
        self.options: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids[str(found["id"])] = {"tag": tag, **found}
        if tag == "option":
            self.options.append(found.get("value"))


def test_page_has_the_plan_form_and_its_results(client: TestClient) -> None:
    html = client.get("/").text
    elements = _Elements()
    elements.feed(html)
    ids = elements.ids
    assert "plan" in elements.options  # the question select: serving, fine-tuning, plans
    # workload, SLO and constraints: the fields of PlanRequest the page sets
    for field in ("plan_input", "plan_output", "traffic_value", "slo_ttft", "slo_tpot", "max_gpus", "disaggregated"):
        assert ids[field]["tag"] == "input", field
    assert {"concurrency", "request_rate"} <= set(elements.options)
    percentile = re.search(r'<select id="percentile".*?</select>', html, re.DOTALL)
    assert percentile, "no percentile select"
    assert {"<option>p50</option>", "<option selected>p90</option>", "<option>p99</option>"} <= set(
        re.findall(r"<option[^>]*>p\d+</option>", percentile.group())
    )  # p90 selected: SLOSpec's default
    assert ids["plan_gpus"]["tag"] == "select" and "multiple" in ids["plan_gpus"]
    assert ids["disaggregated"]["type"] == "checkbox"
    assert "plan_engines" in ids  # a checkbox per pooled engine, from GET /v1/engines
    for result in ("planTable", "ttftHead", "tpotHead", "paretoChart", "planNone", "reasons", "rejectedTable"):
        assert result in ids, result
    assert ids["paretoChart"]["tag"] == "canvas"
    script = STATIC.joinpath("page.js").read_text(encoding="utf-8")
    assert 'api("v1/plans", planRequest())' in script


def test_page_script_sets_no_server_text_as_html() -> None:
    """Every innerHTML the script assigns is a literal with no interpolation: server text goes in as textContent."""
    script = STATIC.joinpath("page.js").read_text(encoding="utf-8")
    assignments = re.findall(r"innerHTML\s*=\s*(.+?);", script)
    assert assignments
    for value in assignments:
        assert re.fullmatch(r"""(["'`])[^"'`$]*\1""", value), value


def test_chart_js_is_vendored_unchanged_with_its_license() -> None:
    assert hashlib.sha256(VENDOR.joinpath("chart.umd.min.js").read_bytes()).hexdigest() == CHART_JS_SHA256
    assert hashlib.sha256(VENDOR.joinpath("LICENSE.md").read_bytes()).hexdigest() == LICENSE_SHA256
    record = VENDOR.joinpath("VENDOR.md").read_text(encoding="utf-8")
    assert CHART_JS_SHA256 in record and "4.6.1" in record and "MIT" in record


def test_redoc_bundle_takes_its_logo_from_the_package(client: TestClient) -> None:
    bundle = client.get(REDOC_JS_URL)
    assert bundle.status_code == 200
    assert REDOC_CDN_LOGO not in bundle.text
    assert "cdn.redoc.ly" not in bundle.text
    assert client.get("/static/redoc-logo-mini.svg").status_code == 200
    assert REDOC_JS_URL in client.get("/redoc").text


def test_engines_are_listed(client: TestClient) -> None:
    engines = client.get("/v1/engines").json()
    assert {"vllm", "sglang", "trtllm", "transformers"} <= {e["engine"] for e in engines}
    assert all(len(e["versions"]) == 2 for e in engines)


# --- in a real browser ------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    path = os.environ.get("MEMPLAN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and Path(path).exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 (a browser needs a socket), stopped after the module."""
    db = tmp_path_factory.mktemp("page") / "jobs.db"
    port = _free_port()
    app = create_app(Settings(database_url=f"sqlite:///{db}", host="127.0.0.1", port=port))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    required = os.environ.get("MEMPLAN_REQUIRE_BROWSER") == "1"  # .ci/run: the browser tests must run there
    if executable is None:
        if required:
            pytest.fail("MEMPLAN_REQUIRE_BROWSER=1 but no chromium is installed")
        pytest.skip("no chromium installed (apt-get install chromium; .ci/run does)")
    if required:
        sync_api = importlib.import_module("playwright.sync_api")  # fail, not skip, when it is missing
    else:
        sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Recorder:
    """Every request the page makes; anything not to the test server is aborted and kept as external."""

    def __init__(self, origin: str) -> None:
        self.origin = urlsplit(origin)
        self.urls: list[str] = []
        self.external: list[str] = []

    def route(self, route: Any) -> None:
        url = route.request.url
        self.urls.append(url)
        parts = urlsplit(url)
        if parts.scheme == "data" or (parts.hostname == "127.0.0.1" and parts.port == self.origin.port):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()


def _page(browser: Any, server: str) -> tuple[Any, Recorder, list[str]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    recorder = Recorder(server)
    context.route("**/*", recorder.route)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, recorder, errors


PAINTED_PIXELS = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
  return painted;
}"""


def _submit_and_wait(page: Any) -> None:
    page.click("#submit")
    page.wait_for_selector("body[data-state=drawn], body[data-state=error]", timeout=DRAW_TIMEOUT_MS)
    assert page.get_attribute("body", "data-state") == "drawn", page.text_content("#status")


def _assert_drawn(page: Any, charts: list[str]) -> None:
    created = page.evaluate("Object.keys(window.memplan.charts)")
    for chart in charts:
        assert chart in created
        assert page.evaluate(PAINTED_PIXELS, chart) > 1000, f"{chart} is blank"
        points = page.evaluate(
            "(id) => window.memplan.charts[id].data.datasets.flatMap(d => d.data).filter(v => v !== null).length",
            chart,
        )
        assert points > 0, f"{chart} has no data"


def test_page_draws_the_serving_charts_with_no_external_request(browser: Any, server: str) -> None:
    page, recorder, errors = _page(browser, server)
    page.goto(server + "/")
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    assert page.locator("#model option").count() >= 20  # the catalog
    page.fill("#concurrency", "32")
    _submit_and_wait(page)
    _assert_drawn(page, ["memoryChart", "capacityChart", "latencyChart"])
    terms = page.evaluate("window.memplan.charts.memoryChart.data.datasets.map(d => d.label)")
    assert "kv_cache" in terms and "weights/linear" in terms
    latency = page.text_content("#latencyCaption") or ""
    assert "under load" in latency  # h100-sxm with vllm has measured kernel tables
    assert page.is_hidden("#plans")  # the plans section belongs to the plan question
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert recorder.external == [], recorder.external
    assert any("/v1/estimates/inference" in url for url in recorder.urls)
    assert errors == []


def test_page_draws_training_phases_and_takes_a_size(browser: Any, server: str) -> None:
    page, recorder, errors = _page(browser, server)
    page.goto(server + "/")
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    page.check("input[name=source][value=size]")
    page.fill("#size", "13B")
    page.select_option("#kind", "training")
    _submit_and_wait(page)
    _assert_drawn(page, ["memoryChart", "phasesChart"])
    assert "(assumed)" in (page.text_content("#summary") or "")
    assert recorder.external == [] and errors == []


def _plan_form(page: Any, gpus: list[str], ttft: str, tpot: str, max_gpus: str) -> None:
    page.select_option("#kind", "plan")
    assert page.text_content("#submit") == "Plan"
    page.select_option("#model", "llama-3-8b")
    page.fill("#plan_input", "2048")
    page.fill("#plan_output", "256")
    page.select_option("#traffic", "concurrency")
    page.fill("#traffic_value", "128")
    page.fill("#slo_ttft", ttft)
    page.fill("#slo_tpot", tpot)
    page.select_option("#percentile", "p90")
    page.select_option("#plan_gpus", gpus)
    page.fill("#max_gpus", max_gpus)


def test_page_draws_plans_and_the_pareto_frontier_with_no_external_request(browser: Any, server: str) -> None:
    page, recorder, errors = _page(browser, server)
    page.goto(server + "/")
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    assert page.locator("#plan_gpus option").count() >= 10  # GET /v1/gpus
    engines = page.eval_on_selector_all("input[name=plan_engine]", "boxes => boxes.map(b => b.value)")
    assert engines == ["vllm", "sglang", "trtllm"]
    _plan_form(page, ["h100-sxm", "h200"], ttft="1000", tpot="40", max_gpus="16")
    _submit_and_wait(page)
    answer = page.evaluate("window.memplan.plan")
    assert answer["plans"], answer["warnings"]
    rows = page.locator("#planTable tbody tr")
    assert rows.count() == len(answer["plans"])
    table = page.eval_on_selector_all(
        "#planTable tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [row[0] for row in table] == [str(p["rank"]) for p in answer["plans"]]
    assert {row[1] for row in table} <= {"h100-sxm", "h200"}
    costs = [float(row[11].lstrip("$").replace(",", "")) for row in table]
    assert costs == sorted(costs) and costs[0] > 0  # cheapest per million output tokens first
    assert page.text_content("#ttftHead") == "TTFT ms p90"
    assert page.is_hidden("#planNone")
    _assert_drawn(page, ["paretoChart"])
    frontier = page.evaluate("window.memplan.charts.paretoChart.data.datasets[0]")
    assert frontier["showLine"] is True and len(frontier["data"]) == len(answer["frontier"])
    xs = [point["x"] for point in frontier["data"]]
    assert xs == sorted(xs)  # joined left to right: tokens/s per user on x
    assert page.locator("#reasons li").count() == len(answer["summary"]["reasons"])
    assert page.locator("#rejectedTable tbody tr").count() == len(answer["rejected"])
    assert page.is_hidden("#memoryChart")  # the estimate charts belong to the other questions
    PLANS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(PLANS_SCREENSHOT), full_page=True)
    assert recorder.external == [], recorder.external
    assert any(urlsplit(url).path == "/v1/plans" for url in recorder.urls)
    assert errors == []


def test_page_explains_an_impossible_plan_and_names_a_422s_field(browser: Any, server: str) -> None:
    page, recorder, errors = _page(browser, server)
    page.goto(server + "/")
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    _plan_form(page, ["l40s"], ttft="1000", tpot="2", max_gpus="4")  # no L40S layout decodes in 2 ms
    _submit_and_wait(page)
    assert page.evaluate("window.memplan.plan.plans.length") == 0
    assert page.is_visible("#planNone") and page.is_hidden("#planTable")
    none = page.text_content("#planNone") or ""
    assert "No plan" in none and "predicted TPOT above the SLO" in none
    reasons = page.eval_on_selector_all("#reasons li code", "codes => codes.map(c => c.textContent)")
    assert "misses_tpot" in reasons
    assert page.get_attribute("#rejectedDetails", "open") is not None  # opened: the rows say why
    assert page.locator("#rejectedTable tbody tr").count() > 0
    assert "l40s" in (page.text_content("#rejectedTable tbody tr td") or "")
    page.fill("#slo_ttft", "")
    page.fill("#slo_tpot", "")  # no latency target at all: PlanRequest's SLO rejects it
    page.click("#submit")
    page.wait_for_selector("body[data-state=error]", timeout=DRAW_TIMEOUT_MS)
    status = page.text_content("#status") or ""
    assert "body.slo" in status and "give ttft_ms, tpot_ms or min_tokens_per_s_per_user" in status
    assert recorder.external == [] and errors == []


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_load_with_no_external_request(browser: Any, server: str, path: str) -> None:
    page, recorder, errors = _page(browser, server)
    page.goto(server + path)
    page.wait_for_selector(".swagger-ui .info, .api-info, [role=navigation], h1", timeout=30_000)
    page.wait_for_timeout(500)  # let the bundle render its side menu (ReDoc's logo)
    assert recorder.external == [], recorder.external
    assert errors == []
