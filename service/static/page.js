// memplan page: a form over POST /v1/estimates/{inference,training}; every number drawn comes from those answers.
// Charts: Chart.js (vendored under static/vendor/chart.js). Nothing here talks to any other host.
"use strict";

const $ = (id) => document.getElementById(id);
const GIB = 2 ** 30;
const CONTEXTS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576];
const CONCURRENCIES = [1, 2, 4, 8, 16, 32, 64, 128];
const COLORS = ["#2f6fdb", "#e8833a", "#3aa55d", "#c4455b", "#8a5cd1", "#9a7b4f", "#d66bb0", "#7f8794",
  "#b9b32f", "#2fb3c4", "#1d3f8a", "#f2b8a0"];
const state = { charts: {}, engines: [], drawn: false, requests: 0 };
window.memplan = state; // the browser test reads the chart objects from here

async function api(path, body) {
  state.requests += 1;
  const init = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) {
    const detail = Array.isArray(data.detail)
      ? data.detail.map((p) => `${p.loc.join(".")}: ${p.msg}`).join("; ") : String(data.detail);
    const error = new Error(detail);
    error.status = response.status;
    error.locs = Array.isArray(data.detail) ? data.detail.map((p) => p.loc.join(".")) : [];
    throw error;
  }
  return data;
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text ?? value;
  select.appendChild(o);
}

function showGroups() {
  const source = document.querySelector("input[name=source]:checked").value;
  document.querySelectorAll("[data-source]").forEach((el) => { el.hidden = el.dataset.source !== source; });
  const kind = $("kind").value;
  document.querySelectorAll("[data-kind]").forEach((el) => { el.hidden = el.dataset.kind !== kind; });
}

function fillVersions() {
  const select = $("engine_version");
  select.innerHTML = "";
  option(select, "", "newest");
  for (const p of state.engines.filter((e) => e.engine === $("engine").value)) {
    option(select, p.versions[0], `${p.label} (${p.versions[0]}–${p.versions[1]})`);
  }
}

async function init() {
  const [models, gpus, engines, openapi] = await Promise.all(
    [api("v1/models"), api("v1/gpus"), api("v1/engines"), api("openapi.json")]);
  models.forEach((m) => option($("model"), m.id, m.name));
  gpus.forEach((g) => option($("gpu"), g.id, g.name));
  state.engines = engines;
  [...new Set(engines.map((e) => e.engine))].forEach((e) => option($("engine"), e));
  $("model").value = "llama-3-8b";
  $("gpu").value = "h100-sxm";
  $("engine").value = "vllm";
  fillVersions();
  if (openapi.paths && openapi.paths["/v1/plans"]) {
    $("plansNote").textContent = "This server has POST /v1/plans; drawing its Pareto frontier is the next step.";
  }
  document.querySelectorAll("input[name=source]").forEach((r) => r.addEventListener("change", showGroups));
  $("kind").addEventListener("change", showGroups);
  $("engine").addEventListener("change", fillVersions);
  $("form").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  showGroups();
  document.body.dataset.state = "ready";
}

function number(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

function modelRef() {
  const source = document.querySelector("input[name=source]:checked").value;
  if (source === "catalog") return $("model").value;
  if (source === "config") return JSON.parse($("config").value);
  const size = { size: $("size").value.trim(), attention: $("attention").value };
  if (number("experts")) size.num_experts = number("experts");
  if (number("topk")) size.experts_per_token = number("topk");
  if (number("max_context")) size.max_context = number("max_context");
  return size;
}

function servingSpec(overrides = {}) {
  const serving = {
    engine: $("engine").value,
    tensor_parallel: number("tp"),
    weight_format: $("weight_format").value,
    kv_cache_dtype: $("kv_dtype").value,
    prompt_tokens: number("prompt"),
    output_tokens: number("output"),
    concurrency: number("concurrency"),
    ...overrides,
  };
  if ($("engine_version").value) serving.engine_version = $("engine_version").value;
  return serving;
}

function trainingSpec() {
  const method = $("method").value === "full" ? { kind: "full" } : { kind: $("method").value, rank: number("rank") };
  return {
    method,
    sequence_length: number("seq"),
    micro_batch_size: number("micro"),
    gradient_checkpointing: $("ckpt").value,
    data_parallel: number("dp"),
    zero_stage: Number($("zero").value),
  };
}

function chart(id, config) {
  if (state.charts[id]) state.charts[id].destroy();
  state.charts[id] = new Chart($(id), { ...config, options: { animation: false, maintainAspectRatio: false,
    responsive: true, ...config.options } });
  return state.charts[id];
}

const gib = (bytes) => bytes / GIB;
const fmt = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en", {
  maximumFractionDigits: digits }));

function summary(s, kind) {
  const cells = kind === "inference"
    ? [["fits", s.fits ? "yes" : "NO", s.fits ? "yes" : "no"], ["GiB per GPU", fmt(s.gib_per_gpu)],
      ["GPUs", s.gpus], ["max sequences", fmt(s.max_concurrent_sequences, 0)],
      ["max context", fmt(s.max_context_tokens, 0)], [`TTFT ms (${s.latency_from})`, fmt(s.ttft_ms)],
      [`TPOT ms (${s.latency_from})`, fmt(s.tpot_ms)], ["output tok/s", fmt(s.output_tokens_per_s, 0)]]
    : [["fits", s.fits ? "yes" : "NO", s.fits ? "yes" : "no"], ["GiB per GPU", fmt(s.gib_per_gpu)],
      ["peak phase", s.peak_phase], ["max micro-batch", s.max_micro_batch_size], ["tokens/s", fmt(s.tokens_per_s, 0)],
      ["MFU %", fmt(s.mfu_pct)], ["step ms", fmt(s.step_time_ms)], ["trainable", fmt(s.trainable_params, 0)]];
  $("summary").innerHTML = "";
  const title = document.createElement("div");
  title.innerHTML = `<span>model</span><b></b>`;
  title.querySelector("b").textContent = s.model + (s.exact ? "" : " (inexact)");
  $("summary").appendChild(title);
  for (const [label, value, cls] of cells) {
    const cell = document.createElement("div");
    if (cls) cell.className = cls;
    cell.innerHTML = "<span></span><b></b>";
    cell.querySelector("span").textContent = label;
    cell.querySelector("b").textContent = value;
    $("summary").appendChild(cell);
  }
}

function termTooltip(terms) {
  return {
    callbacks: {
      label: (ctx) => {
        const term = terms[ctx.datasetIndex];
        return `${term.name}: ${fmt(gib(ctx.raw === undefined ? term.bytes : ctx.raw * GIB), 3)} GiB`;
      },
      afterLabel: (ctx) => {
        const term = terms[ctx.datasetIndex];
        return [`formula: ${term.formula}`, `numbers: ${term.detail}`, `source: ${term.source}`];
      },
    },
  };
}

function drawMemory(e) {
  const terms = e.memory.terms;
  const budget = e.capacity ? gib(e.capacity.budget_bytes) : gib(e.budget_bytes);
  chart("memoryChart", {
    type: "bar",
    data: {
      labels: [e.gpu.name],
      datasets: terms.map((t, i) => ({ label: t.name, data: [gib(t.bytes)], backgroundColor: COLORS[i % 12] })),
    },
    options: {
      indexAxis: "y",
      scales: { x: { stacked: true, title: { display: true, text: `GiB per GPU (budget ${fmt(budget)} GiB)` } },
        y: { stacked: true } },
      plugins: { tooltip: termTooltip(terms), legend: { position: "bottom", labels: { boxWidth: 10 } } },
    },
  });
}

function drawPhases(e) {
  const phases = Object.keys(e.phases);
  const names = [...new Set(phases.flatMap((p) => e.phases[p].terms.map((t) => t.name)))];
  const terms = names.map((n) => phases.map((p) => e.phases[p].terms.find((t) => t.name === n)).find(Boolean));
  chart("phasesChart", {
    type: "bar",
    data: {
      labels: phases.map((p) => (p === e.peak_phase ? `${p} (peak)` : p)),
      datasets: names.map((n, i) => ({
        label: n,
        data: phases.map((p) => gib(e.phases[p].terms.find((t) => t.name === n)?.bytes ?? 0)),
        backgroundColor: COLORS[i % 12],
      })),
    },
    options: {
      scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "GiB per GPU" } } },
      plugins: { tooltip: termTooltip(terms), legend: { position: "bottom", labels: { boxWidth: 10 } } },
    },
  });
}

async function drawCapacity(base, maxContext) {
  const output = number("output");
  const points = CONTEXTS.filter((c) => c <= Math.max(maxContext, 4096));
  const answers = await Promise.all(points.map((ctx) => {
    const out = Math.min(output, Math.floor(ctx / 2));
    return api("v1/estimates/inference?detail=summary",
      { ...base, serving: servingSpec({ prompt_tokens: ctx - out, output_tokens: out }) }).catch(() => null);
  }));
  chart("capacityChart", {
    type: "line",
    data: {
      labels: points.map((c) => (c >= 1024 ? `${c / 1024}K` : String(c))),
      datasets: [{ label: "max concurrent sequences", data: answers.map((a) => a?.summary.max_concurrent_sequences ?? null),
        borderColor: COLORS[0], backgroundColor: COLORS[0] }],
    },
    options: { scales: { x: { title: { display: true, text: "context (prompt + output tokens)" } },
      y: { type: "logarithmic", title: { display: true, text: "sequences" } } } },
  });
}

async function latencyAt(base, c, withLoad) {
  const body = { ...base, serving: servingSpec({ concurrency: c }) };
  if (withLoad) body.load = { concurrency: c };
  return api("v1/estimates/inference?detail=summary", body);
}

async function drawLatency(base) {
  let withLoad = true;
  let answers;
  try {
    answers = await Promise.all(CONCURRENCIES.map((c) => latencyAt(base, c, true)));
  } catch (error) {
    if (!error.locs.includes("body.load")) throw error;
    withLoad = false; // no measured kernel tables for this GPU and engine: the static single-batch figures
    answers = await Promise.all(CONCURRENCIES.map((c) => latencyAt(base, c, false).catch(() => null)));
  }
  $("latencyCaption").textContent = withLoad
    ? "TTFT and TPOT (p50 under load, simulated engine loop) against concurrency"
    : "TTFT and TPOT (static: one prompt alone; one decode step; no kernel tables for this GPU/engine)";
  chart("latencyChart", {
    type: "line",
    data: {
      labels: CONCURRENCIES.map(String),
      datasets: [
        { label: "TTFT ms", data: answers.map((a) => a?.summary.ttft_ms ?? null), yAxisID: "ttft",
          borderColor: COLORS[1], backgroundColor: COLORS[1] },
        { label: "TPOT ms", data: answers.map((a) => a?.summary.tpot_ms ?? null), yAxisID: "tpot",
          borderColor: COLORS[2], backgroundColor: COLORS[2] },
      ],
    },
    options: { scales: { x: { title: { display: true, text: "concurrent requests" } },
      ttft: { position: "left", title: { display: true, text: "TTFT ms" } },
      tpot: { position: "right", title: { display: true, text: "TPOT ms" }, grid: { drawOnChartArea: false } } } },
  });
}

async function estimateWithLoad(base) {
  // Under load at the form's concurrency where the GPU and engine have kernel tables; else the static answer.
  const body = { ...base, serving: servingSpec() };
  try {
    return await api("v1/estimates/inference", { ...body, load: { concurrency: number("concurrency") } });
  } catch (error) {
    if (!error.locs || !error.locs.includes("body.load")) throw error;
    return api("v1/estimates/inference", body);
  }
}

async function submit() {
  state.drawn = false;
  document.body.dataset.state = "busy";
  $("status").textContent = "estimating…";
  const kind = $("kind").value;
  try {
    const base = { model: modelRef(), gpu: $("gpu").value };
    if (kind === "inference") {
      const e = await estimateWithLoad(base);
      $("results").hidden = false;
      showGroups();
      summary(e.summary, kind);
      $("warnings").textContent = e.warnings.join(" · ");
      drawMemory(e);
      await Promise.all([drawCapacity(base, e.model.spec.max_context), drawLatency(base)]);
    } else {
      const e = await api("v1/estimates/training", { ...base, training: trainingSpec() });
      $("results").hidden = false;
      showGroups();
      summary(e.summary, kind);
      $("warnings").textContent = e.warnings.join(" · ");
      drawMemory(e);
      drawPhases(e);
    }
    $("status").textContent = `done (${state.requests} requests so far)`;
    state.drawn = true;
    document.body.dataset.state = "drawn";
  } catch (error) {
    $("status").textContent = `error: ${error.message}`;
    document.body.dataset.state = "error";
  }
}

init().catch((error) => { $("status").textContent = `error: ${error.message}`; });
