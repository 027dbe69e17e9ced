// memplan page: a form over POST /v1/estimates/{inference,training} and POST /v1/plans; every number drawn comes
// from those answers. Charts: Chart.js (vendored under static/vendor/chart.js). Nothing here talks to any other host.
// Text from the server goes into the DOM through textContent only.
"use strict";

const $ = (id) => document.getElementById(id);
const GIB = 2 ** 30;
const CONTEXTS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576];
const CONCURRENCIES = [1, 2, 4, 8, 16, 32, 64, 128];
const COLORS = ["#2f6fdb", "#e8833a", "#3aa55d", "#c4455b", "#8a5cd1", "#9a7b4f", "#d66bb0", "#7f8794",
  "#b9b32f", "#2fb3c4", "#1d3f8a", "#f2b8a0"];
const POOLED = ["vllm", "sglang", "trtllm"]; // the engines a plan may choose (PlanConstraints.engines)
const state = { charts: {}, engines: [], drawn: false, requests: 0, shown: null, plan: null };
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

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function showGroups() {
  const source = document.querySelector("input[name=source]:checked").value;
  document.querySelectorAll("[data-source]").forEach((e) => { e.hidden = e.dataset.source !== source; });
  const kind = $("kind").value;
  document.querySelectorAll("[data-kind]").forEach((e) => { e.hidden = !e.dataset.kind.split(" ").includes(kind); });
  $("submit").textContent = kind === "plan" ? "Plan" : "Estimate";
  if (state.shown !== kind) $("results").hidden = true; // the answer drawn is for another question
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
  const [models, gpus, engines] = await Promise.all([api("v1/models"), api("v1/gpus"), api("v1/engines")]);
  models.forEach((m) => option($("model"), m.id, m.name));
  gpus.forEach((g) => option($("gpu"), g.id, g.name));
  gpus.forEach((g) => option($("plan_gpus"), g.id, g.name));
  state.engines = engines;
  [...new Set(engines.map((e) => e.engine))].forEach((e) => option($("engine"), e));
  for (const engine of POOLED.filter((p) => engines.some((e) => e.engine === p))) {
    const box = el("input");
    Object.assign(box, { type: "checkbox", name: "plan_engine", value: engine, checked: true });
    const label = el("label");
    label.append(box, ` ${engine}`);
    $("plan_engines").appendChild(label);
  }
  $("model").value = "llama-3-8b";
  $("gpu").value = "h100-sxm";
  $("engine").value = "vllm";
  fillVersions();
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

function planRequest() {
  const workload = { input_tokens: number("plan_input"), output_tokens: number("plan_output") };
  workload[$("traffic").value] = number("traffic_value");
  const slo = { ttft_ms: number("slo_ttft"), tpot_ms: number("slo_tpot"), percentile: $("percentile").value };
  const constraints = {
    engines: [...document.querySelectorAll("input[name=plan_engine]:checked")].map((b) => b.value),
    max_gpus: number("max_gpus"),
    disaggregated: $("disaggregated").checked,
  };
  const gpus = [...$("plan_gpus").selectedOptions].map((o) => o.value);
  if (gpus.length) constraints.gpus = gpus; // none selected: every GPU with measured kernel tables
  return { model: modelRef(), workload, slo, constraints }; // empty fields are left out (JSON drops undefined)
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

const pct = (x) => (x === null || x === undefined ? "–" : `${fmt(100 * x, 0)}%`);

function summaryCells(model, cells) {
  $("summary").innerHTML = "";
  const title = document.createElement("div");
  title.innerHTML = `<span>model</span><b></b>`;
  title.querySelector("b").textContent = model;
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

function summary(s, kind) {
  const cells = kind === "inference"
    ? [["fits", s.fits ? "yes" : "NO", s.fits ? "yes" : "no"], ["GiB per GPU", fmt(s.gib_per_gpu)],
      ["GPUs", s.gpus], ["max sequences", fmt(s.max_concurrent_sequences, 0)],
      ["max context", fmt(s.max_context_tokens, 0)], [`TTFT ms (${s.latency_from})`, fmt(s.ttft_ms)],
      [`TPOT ms (${s.latency_from})`, fmt(s.tpot_ms)], ["output tok/s", fmt(s.output_tokens_per_s, 0)]]
    : [["fits", s.fits ? "yes" : "NO", s.fits ? "yes" : "no"], ["GiB per GPU", fmt(s.gib_per_gpu)],
      ["peak phase", s.peak_phase], ["max micro-batch", s.max_micro_batch_size], ["tokens/s", fmt(s.tokens_per_s, 0)],
      ["MFU %", fmt(s.mfu_pct)], ["step ms", fmt(s.step_time_ms)], ["trainable", fmt(s.trainable_params, 0)]];
  summaryCells(s.model + (s.exact ? "" : " (inexact)"), cells);
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

// --- plans: POST /v1/plans ---------------------------------------------------------------------------------------

function cell(row, text, title) {
  const td = el("td", text);
  if (title) td.title = title;
  row.appendChild(td);
  return td;
}

function poolCell(row, plan, value) {
  // One line per pool: the only pool of an aggregated plan, or its prefill and decode pools.
  const td = cell(row);
  for (const pool of plan.pools) {
    td.appendChild(el("div", pool.role === "aggregated" ? value(pool) : `${pool.role} ${value(pool)}`));
  }
}

function planRows(r) {
  const p = r.slo.percentile;
  $("ttftHead").textContent = `TTFT ms ${p}`;
  $("tpotHead").textContent = `TPOT ms ${p}`;
  const body = $("planTable").tBodies[0];
  body.replaceChildren();
  for (const plan of r.plans) {
    const row = el("tr");
    row.title = `${plan.label} (${plan.mode}; latency ${plan.latency_method})`;
    cell(row, String(plan.rank));
    const price = plan.price;
    cell(row, plan.gpu, `$${fmt(price.usd_per_gpu_hour)} per GPU-hour: ${price.provider}, ${price.offer}, read on `
      + `${price.read_on} (via ${price.via})`);
    cell(row, plan.engine);
    poolCell(row, plan, (q) => `${q.tensor_parallel}/${q.pipeline_parallel}/${q.expert_parallel}` +
      (q.attention_data_parallel > 1 ? ` DP${q.attention_data_parallel}` : "") +
      (q.decode_context_parallel > 1 ? ` DCP${q.decode_context_parallel}` : ""));
    poolCell(row, plan, (q) => String(q.replicas));
    cell(row, String(plan.num_gpus));
    cell(row, `${plan.weight_format} / ${plan.kv_cache_dtype}`);
    poolCell(row, plan, (q) => String(q.max_num_seqs));
    cell(row, fmt(plan.ttft[`${p}_ms`], 1));
    cell(row, fmt(plan.tpot[`${p}_ms`], 1));
    cell(row, fmt(plan.tokens_per_s_per_gpu, 0));
    cell(row, `$${fmt(plan.cost_per_million_output_tokens_usd, 3)}`, `$${fmt(plan.cost_per_hour_usd)} per hour, `
      + `${fmt(plan.output_tokens_per_s, 0)} output tokens/s`);
    cell(row, `${pct(plan.headroom.ttft)} · ${pct(plan.headroom.tpot)} · ${pct(plan.headroom.kv_pool)}`);
    body.appendChild(row);
  }
}

function rejections(r) {
  const text = r.summary.reason_text;
  const list = $("reasons");
  list.replaceChildren();
  for (const [reason, count] of Object.entries(r.summary.reasons).sort((a, b) => b[1] - a[1])) {
    const item = el("li");
    item.append(el("b", fmt(count, 0)), ` ${text[reason] ?? reason} `, el("code", reason));
    list.appendChild(item);
  }
  const body = $("rejectedTable").tBodies[0];
  body.replaceChildren();
  for (const f of r.rejected) {
    const row = el("tr");
    cell(row, f.family);
    cell(row, fmt(f.candidates, 0));
    const reasons = cell(row);
    for (const [reason, count] of Object.entries(f.reasons).sort((a, b) => b[1] - a[1])) {
      const tag = el("span", `${reason} ${fmt(count, 0)}`, "reason");
      tag.title = text[reason] ?? reason;
      reasons.appendChild(tag);
    }
    cell(row, f.closest);
    body.appendChild(row);
  }
  $("rejectedSummary").textContent = `${fmt(r.rejected.length, 0)} families rejected outright, every candidate `
    + "failing (counts per reason; hover a reason for its meaning)";
  $("rejectedDetails").open = r.plans.length === 0;
}

function drawPareto(r) {
  const frontier = [...r.frontier].sort((a, b) => a.tokens_per_s_per_user - b.tokens_per_s_per_user);
  const point = (f) => ({ x: f.tokens_per_s_per_user, y: f.tokens_per_s_per_gpu, label: f.label,
    detail: `TTFT ${fmt(f.ttft_ms, 1)} ms, TPOT ${fmt(f.tpot_ms, 1)} ms (${f.method}); `
      + (f.meets_slo ? "meets the SLO" : "misses the SLO") });
  chart("paretoChart", {
    type: "scatter",
    data: {
      datasets: [
        { label: "frontier (green: meets the SLO)", data: frontier.map(point), showLine: true,
          borderColor: COLORS[0], backgroundColor: COLORS[0], pointRadius: 4,
          pointBackgroundColor: frontier.map((f) => (f.meets_slo ? COLORS[2] : COLORS[7])) },
        ...(r.plans.length === 0 ? [] : [{ label: "plans", data: r.plans.map((plan) => ({ x: plan.tokens_per_s_per_user, y: plan.tokens_per_s_per_gpu,
          label: `#${plan.rank} ${plan.label}`,
          detail: `$${fmt(plan.cost_per_million_output_tokens_usd, 3)} per million output tokens` })),
        pointStyle: "triangle", pointRadius: 8, borderColor: COLORS[1], backgroundColor: COLORS[1] }]),
      ],
    },
    options: {
      scales: { x: { type: "linear", title: { display: true, text: "tokens/s per user (1000 / TPOT)" } },
        y: { title: { display: true, text: "tokens/s per GPU" } } },
      plugins: { tooltip: { callbacks: { label: (ctx) => ctx.raw.label, afterLabel: (ctx) => ctx.raw.detail } } },
    },
  });
}

function drawPlans(r) {
  const s = r.summary;
  const cheapest = r.plans[0];
  summaryCells(r.model, [
    ["plans", fmt(s.plans, 0), s.plans ? "yes" : "no"],
    ["cheapest $/M output tokens", cheapest ? `$${fmt(cheapest.cost_per_million_output_tokens_usd, 3)}` : "–"],
    ["cheapest GPUs", cheapest ? String(cheapest.num_gpus) : "–"],
    ["candidates", fmt(s.candidates, 0)], ["families", fmt(s.families, 0)], ["simulated", fmt(s.simulated, 0)],
  ]);
  $("warnings").textContent = r.warnings.join(" · ");
  $("plansNote").textContent = `${fmt(s.candidates, 0)} candidates in ${fmt(s.families, 0)} families: `
    + `${fmt(s.pruned_by_memory, 0)} pruned by memory, ${fmt(s.screened_by_static_bounds, 0)} screened by the `
    + `static bounds, ${fmt(s.simulated, 0)} load simulations. TTFT and TPOT at ${r.slo.percentile}; headroom is `
    + "1 − predicted / limit. Hover a row for its label, the GPU for its price's source.";
  const none = r.plans.length === 0;
  $("planNone").hidden = !none;
  const top = Object.entries(s.reasons).sort((a, b) => b[1] - a[1]).slice(0, 3)
    .map(([reason, count]) => `${s.reason_text[reason] ?? reason} (${fmt(count, 0)})`);
  $("planNone").textContent = none ? `No plan: no configuration meets the SLO within these constraints. Of the `
    + `${fmt(s.candidates, 0)} candidates, most failed because: ${top.join("; ")}. Every reason is under Rejected `
    + "below, and each family's nearest miss in its row." : "";
  $("planTable").parentElement.hidden = none;
  planRows(r);
  rejections(r);
  $("paretoChart").closest("figure").hidden = r.frontier.length === 0;
  if (r.frontier.length) drawPareto(r);
}

async function submit() {
  state.drawn = false;
  document.body.dataset.state = "busy";
  const kind = $("kind").value;
  $("status").textContent = kind === "plan" ? "planning…" : "estimating…";
  try {
    if (kind === "plan") {
      const r = await api("v1/plans", planRequest());
      state.plan = r; // the browser test compares the table with it
      state.shown = kind;
      $("results").hidden = false;
      showGroups();
      drawPlans(r);
    } else if (kind === "inference") {
      const base = { model: modelRef(), gpu: $("gpu").value };
      const e = await estimateWithLoad(base);
      state.shown = kind;
      $("results").hidden = false;
      showGroups();
      summary(e.summary, kind);
      $("warnings").textContent = e.warnings.join(" · ");
      drawMemory(e);
      await Promise.all([drawCapacity(base, e.model.spec.max_context), drawLatency(base)]);
    } else {
      const base = { model: modelRef(), gpu: $("gpu").value };
      const e = await api("v1/estimates/training", { ...base, training: trainingSpec() });
      state.shown = kind;
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
