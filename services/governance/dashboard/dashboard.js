/* Continuo governance dashboard.
 *
 * Reads governance's /v1 API with the key the user gives (kept in this tab's sessionStorage,
 * sent as X-API-Key) and draws five views: served accuracy over time with the decisions marked,
 * the current routing, the latest fairness audit per group, a prediction's lineage, and the
 * decision trail. Nothing from the API is ever parsed as HTML (text nodes and SVG attributes
 * only). Charts: uPlot (time series) and small SVG drawn here.
 */
"use strict";
(() => {
  const KEY = "continuo.governance.key";
  const VIEWS = ["accuracy", "routing", "audits", "lineage", "trail"];
  const REFRESH_MS = 20000;
  // Model versions' colours: none of the markers' green, red, purple or orange, none too pale.
  // Neighbouring versions (v7, v8, v9) get colours far apart.
  const PALETTE = ["#1f77b4", "#b8860b", "#d6549b", "#17a2b8", "#8c564b", "#5b5fc7",
                   "#7f7f00", "#2c3e50", "#a0522d", "#4e9a9a"];
  // Flag variants' colours.
  const VARIANTS = ["#4e79a7", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"];
  const COLOR = { good: "#2e7d32", bad: "#c62828", canary: "#7b3fa0", drift: "#e07b00",
                  shadow: "#5f7d95", ink: "#1f2933", muted: "#616e7c", line: "#e4e7eb" };
  // The decisions and alarms marked on the accuracy chart.
  const MARKED = ["DriftDetected", "ModelPromoted", "ModelRolledBack", "CanaryStarted",
                  "CanaryWeightChanged", "CanaryEnded"];
  // What the decision trail shows: decisions, audits, models, alarms (not the measurements).
  const TRAIL_GROUPS = {
    decisions: ["ModelPromoted", "ModelRolledBack", "PromotionRefused", "ApprovalRequested",
                "ApprovalGranted", "ApprovalRejected", "CanaryStarted", "CanaryWeightChanged",
                "CanaryEnded", "ShadowStarted", "ShadowStopped", "FlagChanged"],
    audits: ["AuditCompleted"],
    models: ["ModelTrained", "TaskRegistered"],
    alarms: ["DriftDetected", "ConfigSwitched", "ConfigDropped"],
    measurements: ["ArmsScored", "ArmsServed", "ServedScored"],
  };
  const state = { task: null, view: "accuracy", plots: [], timer: null, loading: 0, zoomed: false };

  // ---------------------------------------------------------------------------------------
  // Small helpers

  const $ = (selector) => document.querySelector(selector);
  const enc = encodeURIComponent;

  /** An HTML element; props: class, text, on<event>, data-*, anything else as an attribute. */
  function h(tag, props, ...kids) {
    const node = document.createElement(tag);
    setProps(node, props);
    for (const kid of kids.flat(Infinity)) {
      if (kid == null || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  /** An SVG element, the same way. */
  function s(tag, props, ...kids) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    setProps(node, props);
    for (const kid of kids.flat(Infinity)) {
      if (kid == null || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  function setProps(node, props) {
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.setAttribute("class", v);
      else if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "css") for (const [p, x] of Object.entries(v)) node.style.setProperty(p, x);
      else node.setAttribute(k, String(v));
    }
  }

  const pct = (x, digits = 1) => (x == null ? "–" : `${(100 * x).toFixed(digits)}%`);
  const num = (x) => (x == null ? "–" : Number(x).toLocaleString("en"));
  const seconds = (iso) => Date.parse(iso) / 1000;
  function clock(t, withDate = false) {
    const d = new Date(t * 1000).toISOString();
    return withDate ? `${d.slice(0, 10)} ${d.slice(11, 19)}` : d.slice(11, 19);
  }
  const when = (envelope) => seconds(envelope.recorded_at || envelope.occurred_at);

  class HttpError extends Error {
    constructor(status, detail) {
      super(typeof detail === "string" ? detail : JSON.stringify(detail));
      this.status = status;
    }
  }

  /** GET /v1/<path> with the key; 401 forgets the key and asks for another. */
  async function api(path, params) {
    const key = sessionStorage.getItem(KEY);
    if (!key) {
      signin();
      throw new HttpError(401, "no key");
    }
    const url = new URL(`v1/${path}`, document.baseURI);
    for (const [k, v] of Object.entries(params || {})) {
      for (const one of [].concat(v)) if (one != null) url.searchParams.append(k, one);
    }
    const response = await fetch(url, {
      headers: { "X-API-Key": key, Accept: "application/json" },
      cache: "no-store",
    });
    if (response.ok) return response.json();
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail;
    } catch (_) { /* not JSON: the status text says it */ }
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      signin(`The key was refused: ${detail}`);
    }
    throw new HttpError(response.status, detail);
  }

  /** Every trail event of the task of the given types, in store order (pages of 1,000). */
  async function trail(task, types, maxPages = 20) {
    const events = [];
    let after = 0;
    for (let page = 0; page < maxPages && after != null; page++) {
      const answer = await api(`tasks/${enc(task)}/trail`, { after, limit: 1000, type: types });
      events.push(...answer.events);
      after = answer.next_after;
    }
    return events;
  }

  const tile = (k, v, sub, id) =>
    h("div", { class: "tile" }, h("div", { class: "k" }, k), h("div", { class: "v", id }, v),
      sub ? h("div", { class: "s" }, sub) : null);
  const empty = (text) => h("p", { class: "empty" }, text);

  // ---------------------------------------------------------------------------------------
  // Key, task, navigation

  function signin(message) {
    $("#signin").hidden = false;
    for (const id of ["#tabs", "#session"]) $(id).hidden = true;
    $(".task-pick").hidden = true;
    for (const v of document.querySelectorAll(".view")) v.hidden = true;
    const error = $("#signin-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("#key").focus();
  }

  async function start() {
    $("#signin").hidden = true;
    let tasks;
    let who;
    try {
      [tasks, who] = await Promise.all([api("tasks").then((r) => r.tasks), api("auth/whoami")]);
    } catch (exc) {
      if (exc.status !== 401) signin(`Governance did not answer: ${exc.message}`);
      return;
    }
    $("#who").textContent = `${who.name} (${who.role})`;
    $("#who").title = `key ${who.key_id}`;
    for (const id of ["#tabs", "#session"]) $(id).hidden = false;
    $(".task-pick").hidden = false;
    const select = $("#task");
    select.replaceChildren(...tasks.map((t) => h("option", { value: t.task }, t.task)));
    const wanted = hashParams().get("task");
    state.task = tasks.some((t) => t.task === wanted) ? wanted : tasks[0]?.task || null;
    if (state.task) select.value = state.task;
    route();
    clearInterval(state.timer);
    state.timer = setInterval(() => {
      // Refresh what is on screen, not a form the user is filling in.
      const busy = state.view === "lineage" || (state.view === "accuracy" && state.zoomed);
      if (document.visibilityState === "visible" && !busy) render();
    }, REFRESH_MS);
  }

  function hashParams() {
    return new URLSearchParams(location.hash.replace(/^#/, ""));
  }

  function setHash(changes) {
    const params = hashParams();
    for (const [k, v] of Object.entries(changes)) {
      if (v == null) params.delete(k);
      else params.set(k, v);
    }
    location.hash = params.toString();
  }

  function route() {
    const params = hashParams();
    const view = params.get("view");
    state.view = VIEWS.includes(view) ? view : "accuracy";
    const task = params.get("task");
    if (task && task !== state.task && [...$("#task").options].some((o) => o.value === task)) {
      state.task = task;
      $("#task").value = task;
    }
    for (const a of document.querySelectorAll("#tabs a")) {
      a.classList.toggle("active", a.dataset.view === state.view);
      a.href = `#view=${a.dataset.view}&task=${enc(state.task || "")}`;
    }
    render();
  }

  async function render() {
    for (const v of document.querySelectorAll(".view")) v.hidden = v.dataset.view !== state.view;
    const root = $(`#view-${state.view}`);
    if (!state.task) {
      root.replaceChildren(empty("No task is registered yet."));
      root.dataset.ready = "1";
      return;
    }
    const ticket = ++state.loading;
    delete root.dataset.ready;
    try {
      const content = await RENDER[state.view](state.task);
      if (ticket !== state.loading) return; // a newer render started meanwhile
      for (const plot of state.plots) plot.destroy();
      state.plots = [];
      state.zoomed = false;
      root.replaceChildren(...content.nodes);
      for (const after of content.after || []) after();
      $("#refreshed").textContent = `read ${clock(Date.now() / 1000)} UTC`;
    } catch (exc) {
      if (ticket !== state.loading || exc.status === 401) return;
      root.replaceChildren(h("p", { class: "error" }, `Could not read ${state.view}: ${exc.message}`));
    }
    root.dataset.ready = "1";
  }

  // ---------------------------------------------------------------------------------------
  // Served accuracy over time, with decisions and alarms marked

  function marker(event) {
    const p = event.payload;
    const v = p.model_version;
    const t = when(event);
    switch (event.type) {
      case "DriftDetected": {
        // ADWIN also sees the error fall (a model learning): marked, but nothing was adapted.
        const fell = (p.evidence || {}).rise === false;
        return { t, color: COLOR.drift, dash: [5, 4], label: fell ? "drift ↓" : "drift",
                 text: `drift alarm at labelled row ${num(p.at_labelled)} (${p.detector}`
                   + `${fell ? ": the error fell, nothing to adapt" : ""})` };
      }
      case "ModelPromoted":
        return { t, color: COLOR.good, dash: [], label: `▲ v${v}`,
                 text: `v${v} promoted by ${p.decided_by}` };
      case "ModelRolledBack":
        return { t, color: COLOR.bad, dash: [], label: `▼ v${v}`,
                 text: `rolled back to v${v} by ${p.decided_by}` };
      case "CanaryStarted":
        return { t, color: COLOR.canary, dash: [6, 3], label: `◆ v${v} ${p.weight}%`,
                 text: `canary v${v} started on ${p.weight}% by ${p.decided_by}` };
      case "CanaryWeightChanged":
        return { t, color: COLOR.canary, dash: [6, 3], label: `◆ ${p.weight}%`,
                 text: `canary v${v} now ${p.weight}% (${p.decided_by})` };
      case "CanaryEnded": {
        const back = p.outcome === "rolled_back";
        return { t, color: back ? COLOR.bad : COLOR.canary, dash: [6, 3],
                 label: back ? `◆ v${v} ✗` : `◆ v${v} ✓`,
                 text: `canary v${v} ended: ${String(p.outcome).replace("_", " ")} (${p.decided_by})` };
      }
      default:
        return null;
    }
  }

  /** uPlot plugin: a vertical line per marker, labelled above the plot (labels that would
   * overlap go to the next row; past three rows only the line is drawn). */
  function markersPlugin(marks) {
    return {
      hooks: {
        draw: [(u) => {
          const { ctx } = u;
          const { left, top, width, height } = u.bbox;
          const dpr = window.devicePixelRatio || 1;
          const taken = [[], [], []]; // the label spans drawn in each row
          ctx.save();
          ctx.font = `${11 * dpr}px system-ui, sans-serif`;
          ctx.textBaseline = "bottom";
          for (const m of marks) {
            const x = Math.round(u.valToPos(m.t, "x", true));
            if (x < left - 1 || x > left + width + 1) continue;
            ctx.strokeStyle = m.color;
            ctx.globalAlpha = 0.85;
            ctx.lineWidth = 1.5 * dpr;
            ctx.setLineDash(m.dash.map((d) => d * dpr));
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            const w = ctx.measureText(m.label).width + 6 * dpr;
            const row = taken.findIndex((spans) => spans.every(([a, b]) => x + w <= a || x >= b));
            if (row < 0) continue;
            taken[row].push([x, x + w]);
            ctx.globalAlpha = 1;
            ctx.fillStyle = m.color;
            ctx.fillText(m.label, x + 2 * dpr, top - (3 + 13 * row) * dpr);
          }
          ctx.restore();
        }],
      },
    };
  }

  /** Windows as uPlot columns: x (time), all answers, then one column per version and role:
   * the share answered right, or (a regression's windows, `mae`) the mean absolute error. */
  function accuracyColumns(windows) {
    const mae = windows.some((w) => w.abs_error != null);
    const score = (a) => (mae ? a.abs_error : a.correct);
    const byWindow = new Map();
    for (const w of windows) {
      const key = w.to_position;
      if (!byWindow.has(key)) byWindow.set(key, { t: seconds(w.at), pos: key, arms: [] });
      byWindow.get(key).arms.push(w);
    }
    const rows = [...byWindow.values()].sort((a, b) => a.pos - b.pos);
    for (let i = 1; i < rows.length; i++) {
      // Two windows closed in one batch may share a time: keep x strictly increasing.
      if (rows[i].t <= rows[i - 1].t) rows[i].t = rows[i - 1].t + 0.001;
    }
    const roleOrder = { champion: 0, canary: 1, shadow: 2 };
    const keys = [...new Set(windows.map((w) => `${w.model_version}|${w.role}`))].sort((a, b) => {
      const [va, ra] = a.split("|");
      const [vb, rb] = b.split("|");
      return va - vb || roleOrder[ra] - roleOrder[rb];
    });
    const x = rows.map((r) => r.t);
    const all = rows.map((r) => {
      const answered = r.arms.filter((a) => a.role !== "shadow");
      const n = answered.reduce((acc, a) => acc + a.n, 0);
      return n ? answered.reduce((acc, a) => acc + score(a), 0) / n : null;
    });
    const allN = rows.map((r) => r.arms.filter((a) => a.role !== "shadow")
      .reduce((acc, a) => acc + a.n, 0));
    const columns = keys.map((key) => rows.map((r) => {
      const arm = r.arms.find((a) => `${a.model_version}|${a.role}` === key);
      return arm && arm.n ? score(arm) / arm.n : null;
    }));
    const counts = keys.map((key) => rows.map((r) => {
      const arm = r.arms.find((a) => `${a.model_version}|${a.role}` === key);
      return arm ? arm.n : 0;
    }));
    const total = rows.reduce((acc, r) => acc + r.arms.filter((a) => a.role !== "shadow")
      .reduce((c, a) => c + score(a), 0), 0);
    // A figure as shown: a share in percent, or an error in the label's units.
    const show = mae ? (v) => (v == null ? "–" : Number(v.toPrecision(4)).toString()) : pct;
    return { x, all, allN, keys, columns, counts, rows, mae, total, show };
  }

  async function renderAccuracy(task) {
    const [served, marks, models] = await Promise.all([
      api(`tasks/${enc(task)}/served-accuracy`).catch((exc) => {
        if (exc.status === 404) return { windows: [] };
        throw exc;
      }),
      trail(task, MARKED),
      api(`tasks/${enc(task)}/models`),
    ]);
    const windows = served.windows || [];
    const data = accuracyColumns(windows);
    const markers = marks.map(marker).filter(Boolean).sort((a, b) => a.t - b.t);
    const answered = data.allN.reduce((a, b) => a + b, 0);
    const figure = data.mae ? "served MAE" : "served accuracy";
    const last = data.all.length ? data.all[data.all.length - 1] : null;
    const count = (type, outcome) => marks.filter((e) => e.type === type
      && (outcome == null || e.payload.outcome === outcome)).length;
    const tiles = h("div", { class: "tiles" },
      tile("champion", models.champion == null ? "none" : `v${models.champion}`,
        `${models.models.length} versions published`, "champion-version"),
      tile(`${figure}, last window`, data.show(last),
        data.allN.length ? `${num(data.allN[data.allN.length - 1])} labelled answers` : "no window yet"),
      tile(`${figure}, all windows`, data.show(answered ? data.total / answered : null),
        `${num(answered)} answers in ${num(data.rows.length)} windows`),
      tile("promotions ▲ · rollbacks ▼", `${count("ModelPromoted")} · ${count("ModelRolledBack")
        + count("CanaryEnded", "rolled_back")}`,
        `${count("DriftDetected")} drift alarms, ${count("CanaryStarted")} canaries started`));
    const chart = h("div", { class: "chart", id: "accuracy-chart",
                             "data-windows": data.rows.length, "data-markers": markers.length });
    const key = h("div", { class: "key" },
      h("span", {}, h("span", { class: "sw", css: { "border-color": "rgba(31, 41, 51, 0.3)",
                                                   "border-top-width": "7px" } }),
        "all answers callers got (champion and canary together)"),
      h("span", {}, h("span", { class: "sw", css: { "border-color": PALETTE[0] } }),
        "a version as champion"),
      h("span", {}, h("span", { class: "sw dashed", css: { "border-color": PALETTE[0] } }),
        "as canary"),
      h("span", {}, h("span", { class: "sw dotted", css: { "border-color": PALETTE[0] } }),
        "as shadow (scored, not served)"),
      h("span", {}, h("span", { class: "sw dashed", css: { "border-color": COLOR.drift } }),
        "drift alarm"),
      h("span", {}, h("span", { class: "sw", css: { "border-color": COLOR.good } }),
        "▲ promotion"),
      h("span", {}, h("span", { class: "sw", css: { "border-color": COLOR.bad } }),
        "▼ rollback, ✗ canary rolled back"),
      h("span", {}, h("span", { class: "sw dashed", css: { "border-color": COLOR.canary } }),
        "◆ canary started, reweighted, ✓ promoted"));
    const list = h("div", { class: "marks" }, markers.slice(-40).map((m) =>
      h("span", { class: "mark", css: { "border-left-color": m.color } },
        `${clock(m.t)} ${m.text}`)));
    const card = h("div", { class: "card" },
      h("h2", {}, `${data.mae ? "Served MAE" : "Served accuracy"} over time · ${task}`),
      h("p", { class: "sub" },
        "Each point is one window of labelled rows that serving answered (log and wait), scored "
        + "when their labels arrived: "
        + (data.mae ? "the mean absolute error of each model version's answers"
          : "the share each model version got right")
        + ", by the role it answered in. Decisions and alarms from the trail are marked on the same time axis (UTC)."),
      windows.length ? chart : empty("No served window scored yet: serving's recorded answers "
        + "are scored by the trainer as their labels arrive."),
      key, h("h3", {}, "Marked decisions and alarms"),
      markers.length ? list : empty("None yet."));
    const after = windows.length ? [() => drawAccuracy(chart, data, markers, models.champion)] : [];
    return { nodes: [tiles, card], after };
  }

  /** Tick labels: the time of day, with the date where it changes (UTC). */
  function timeTicks(ticks) {
    const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
    let day = null;
    return ticks.map((t) => {
      const d = new Date(t * 1000).toISOString();
      const time = step < 60 ? d.slice(11, 19) : d.slice(11, 16);
      const date = d.slice(0, 10);
      const shown = date !== day ? `${time}\n${date}` : time;
      day = date;
      return shown;
    });
  }

  function drawAccuracy(chart, data, markers, champion) {
    const values = [...data.all, ...data.columns.flat()].filter((v) => v != null);
    const low = Math.max(0, Math.floor(Math.min(...values, 0.9) * 10) / 10 - 0.05);
    // Accuracy from a little below the lowest point to 1; an error from 0 to above the highest.
    const yRange = data.mae ? [0, Math.max(...values, 0) * 1.1 || 1] : [low, 1];
    const times = [...data.x, ...markers.map((m) => m.t)];
    const t0 = Math.min(...times);
    const t1 = Math.max(...times);
    const pad = Math.max(1, (t1 - t0) * 0.02);
    // Colours by version number, so a version keeps its colour as newer ones appear.
    const colorOf = (v) => PALETTE[Number(v) % PALETTE.length];
    const dash = { champion: [], canary: [7, 4], shadow: [2, 3] };
    const valueOf = (counts) => (u, v, si, i) =>
      (i == null ? "" : v == null ? "–" : `${data.show(v)} of ${counts[i]}`);
    const series = [
      { label: "time (UTC)", value: (u, v) => (v == null ? "" : clock(v, true)) },
      { label: "all answers", stroke: "rgba(31, 41, 51, 0.22)", width: 9,
        points: { show: false }, value: valueOf(data.allN) },
      ...data.keys.map((key, i) => {
        const [v, role] = key.split("|");
        return {
          label: `v${v} ${role}`,
          stroke: colorOf(v),
          width: role === "shadow" ? 1.5 : Number(v) === champion ? 3 : 2,
          dash: dash[role] || [],
          alpha: role === "shadow" ? 0.8 : 1,
          points: { show: true, size: role === "shadow" ? 3 : 4 },
          value: valueOf(data.counts[i]),
        };
      }),
    ];
    const width = Math.max(600, chart.clientWidth);
    const plot = new uPlot({
      width,
      height: 420,
      padding: [46, 34, 0, 0],
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true, range: () => [t0 - pad, t1 + pad] }, y: { range: () => yRange } },
      axes: [
        { label: "time (UTC)", stroke: COLOR.muted, grid: { stroke: "#eef1f4" },
          size: 58, values: (u, ticks) => timeTicks(ticks) },
        { label: data.mae ? "mean absolute error of the answers" : "accuracy of the answers",
          stroke: COLOR.muted, size: 64, grid: { stroke: "#eef1f4" },
          values: (u, ticks) => ticks.map((t) => (data.mae ? data.show(t)
            : `${Math.round(t * 100)}%`)) },
      ],
      series,
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      plugins: [markersPlugin(markers)],
      hooks: {
        // A zoomed-in chart is not redrawn by the periodic refresh (it would lose the zoom).
        setScale: [(u, key) => {
          if (key === "x") state.zoomed = u.scales.x.min > t0 - pad || u.scales.x.max < t1 + pad;
        }],
      },
    }, [data.x, data.all, ...data.columns], chart);
    chart.dataset.points = String(data.all.filter((v) => v != null).length);
    state.plots.push(plot);
  }

  // ---------------------------------------------------------------------------------------
  // Routing: who answers now

  const STATUS_COLOR = {
    champion: COLOR.good, canary: COLOR.canary, shadow: COLOR.shadow, retired: "#9aa5b1",
    refused: COLOR.bad, rejected: COLOR.bad, awaiting_approval: COLOR.drift,
    stopped: "#cbd2d9", candidate: "#c9a227", challenger: "#17a2b8",
  };

  /** A horizontal bar split into labelled shares (percent), laid out in percentages of the
   * width, so its text stays at its size whatever the width. */
  function splitBar(parts, height = 44, id = null) {
    const svg = s("svg", { width: "100%", height: height + 20, role: "img", class: "split", id });
    let x = 0;
    for (const part of parts) {
      if (part.share <= 0) continue;
      svg.append(s("rect", { x: `${x}%`, y: 0, width: `${part.share}%`, height, fill: part.color },
        s("title", {}, part.title || part.label)));
      if (part.share >= 8) {
        svg.append(s("text", { x: `${x + 0.8}%`, y: height / 2 + 5, fill: "#fff",
                               "font-size": height > 30 ? 15 : 12, "font-weight": 600 }, part.label));
      }
      x += part.share;
    }
    for (const tick of [0, 25, 50, 75, 100]) {
      svg.append(s("text", { x: `${tick}%`, y: height + 15, "font-size": 11, fill: COLOR.muted,
                             "text-anchor": tick === 0 ? "start" : tick === 100 ? "end" : "middle" },
        `${tick}%`));
    }
    return svg;
  }

  /** Model versions as a strip of boxes coloured by status. */
  function versionStrip(models, champion) {
    const size = 34;
    const gap = 6;
    const perRow = 24;
    const rows = Math.ceil(models.length / perRow) || 1;
    const width = perRow * (size + gap);
    const svg = s("svg", { viewBox: `0 0 ${width} ${rows * (size + gap)}`, width,
                           height: rows * (size + gap), role: "img", id: "version-strip" });
    models.forEach((m, i) => {
      const x = (i % perRow) * (size + gap);
      const y = Math.floor(i / perRow) * (size + gap);
      const color = STATUS_COLOR[m.status] || "#cbd2d9";
      svg.append(s("g", {},
        s("rect", { x, y, width: size, height: size, rx: 6, fill: color,
                    stroke: m.model_version === champion ? COLOR.ink : "none", "stroke-width": 2 }),
        s("text", { x: x + size / 2, y: y + size / 2 + 4, "text-anchor": "middle",
                    "font-size": 12, fill: "#fff", "font-weight": 600 }, `v${m.model_version}`),
        s("title", {}, `v${m.model_version}: ${m.status} (${m.config}, trained `
          + `${m.trained_at.slice(11, 19)} UTC)`)));
    });
    return svg;
  }

  async function renderRouting(task) {
    const [routing, models] = await Promise.all([
      api(`tasks/${enc(task)}/routing`),
      api(`tasks/${enc(task)}/models`),
    ]);
    const champ = routing.champion;
    const canary = routing.canary;
    const weight = canary ? canary.share : 0;
    const tiles = h("div", { class: "tiles" },
      tile("champion", champ ? `v${champ.model_version}` : "none",
        champ ? `answers ${100 - weight}% of entities` : "no model answers yet", "routing-champion"),
      tile("canary", canary ? `v${canary.model_version}` : "none",
        canary ? `answers ${weight}% of entities (sticky)` : "no canary running", "routing-canary"),
      tile("shadows", String(routing.shadows.length), "scored beside, never served"),
      tile("flags", String(Object.keys(routing.flags).length), "evaluated per entity"),
      routing.killed ? tile("kill switch", "ON", "canary and shadows stopped") : null);
    const parts = [];
    if (champ) {
      parts.push({ share: 100 - weight, color: COLOR.good,
                   label: `champion v${champ.model_version} · ${100 - weight}%` });
    }
    if (canary && weight > 0) {
      parts.push({ share: weight, color: COLOR.canary,
                   label: `canary v${canary.model_version} · ${weight}%` });
    }
    const traffic = h("div", { class: "card" },
      h("h2", {}, `Who answers · ${task}`),
      h("p", { class: "sub" }, "The share of entities each model answers, folded from the task's "
        + "deployment stream (what every serving replica converges to). An entity stays with "
        + "the arm its id hashes to while the canary runs."),
      parts.length ? splitBar(parts, 44, "traffic") : empty("No champion yet."));
    const shadows = h("div", { class: "card" }, h("h3", {}, "Shadows"),
      h("p", { class: "sub" }, "Run on a sample of requests beside the champion; their answers "
        + "are scored on the labels, never returned."),
      routing.shadows.length
        ? routing.shadows.map((a) => h("div", {},
          h("div", { class: "split-label" }, `v${a.model_version} scores ${pct(a.share, 0)} of requests`),
          splitBar([{ share: a.share * 100, color: COLOR.shadow,
                      label: `shadow v${a.model_version}` }], 26)))
        : empty("No shadow running."));
    const flagList = Object.entries(routing.flags);
    const flags = h("div", { class: "card" }, h("h3", {}, "Flags"),
      h("p", { class: "sub" }, "Typed flags served to clients (OFREP); variants split entities "
        + "by weight."),
      flagList.length ? flagList.map(([name, flag]) => {
        const weights = flag.weights || {};
        const total = Object.values(weights).reduce((a, b) => a + b, 0);
        const bar = total > 0 ? splitBar(Object.entries(weights).map(([variant, w], i) => ({
          share: (100 * w) / total, color: VARIANTS[i % VARIANTS.length],
          label: `${variant} · ${Math.round((100 * w) / total)}%`,
        })), 26) : null;
        return h("div", { class: "flag" },
          h("span", { class: "name mono" }, name), " ",
          h("span", { class: "chip" }, flag.type), " default ",
          h("code", {}, JSON.stringify(flag.value)), bar);
      }) : empty("No flag set."));
    const statuses = [...new Set(models.models.map((m) => m.status))];
    const registry = h("div", { class: "card" },
      h("h3", {}, "Model versions by status"),
      h("p", { class: "sub" }, "Every published version; the champion is outlined. Hover a box "
        + "for its learner and training time."),
      models.models.length ? versionStrip(models.models, models.champion) : empty("None yet."),
      h("div", { class: "key" }, statuses.map((st) => h("span", {},
        h("span", { class: "sw", css: { "border-color": STATUS_COLOR[st] || "#cbd2d9",
                                        "border-top-width": "8px" } }), st))));
    return { nodes: [tiles, traffic, h("div", { class: "two" }, shadows, flags), registry] };
  }

  // ---------------------------------------------------------------------------------------
  // The latest fairness audits, per sensitive group

  const METRICS = [
    ["selection_rate", "selection rate", "#4e79a7"],
    ["accuracy", "accuracy", "#59a14f"],
    ["false_positive_rate", "false positive rate", "#e15759"],
    ["false_negative_rate", "false negative rate", "#f28e2b"],
  ];

  // A regression's audit: each group's errors and answers, in the label's units.
  const REGRESSION_METRICS = [
    ["mae", "MAE", "#e15759"],
    ["rmse", "RMSE", "#f28e2b"],
  ];

  /** Grouped bars: one group of bars per sensitive group, one bar per metric (0-100%; a
   * regression's errors on a scale from 0 to the largest). */
  function groupBars(groups, regression = false) {
    const names = Object.keys(groups);
    const metrics = regression ? REGRESSION_METRICS : METRICS;
    const shown = metrics.filter(([m]) => names.some((g) => groups[g][m] != null));
    const top = regression ? Math.max(1e-9, ...names.flatMap((g) => shown.map(([m]) =>
      groups[g][m] || 0))) : 1;
    const fmt = regression ? (v) => Number(v.toPrecision(3)).toString() : pct;
    const bar = 36;
    const groupWidth = shown.length * bar + 48;
    const height = 230;
    const left = 44;
    const width = left + names.length * groupWidth + 10;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height + 50}`, width, height: height + 50,
                           role: "img", class: "group-bars" });
    for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
      const y = height - tick * height + 10;
      svg.append(s("line", { x1: left, x2: width, y1: y, y2: y, stroke: COLOR.line }),
        s("text", { x: left - 6, y: y + 4, "text-anchor": "end", "font-size": 11,
                    fill: COLOR.muted }, regression ? fmt(tick * top) : `${tick * 100}%`));
    }
    names.forEach((name, gi) => {
      const g = groups[name];
      const x0 = left + gi * groupWidth + 20;
      shown.forEach(([m, label, color], mi) => {
        const v = g[m];
        if (v == null) return;
        const x = x0 + mi * bar;
        const hgt = Math.max(1, (v / top) * height);
        svg.append(s("rect", { x, y: height - hgt + 10, width: bar - 4, height: hgt,
                               fill: color, opacity: g.in_pass_fail ? 1 : 0.35 },
          s("title", {}, `${name}: ${label} ${fmt(v)} (${g.count} rows)`)),
        s("text", { x: x + (bar - 4) / 2, y: height - hgt + 5, "text-anchor": "middle",
                    "font-size": 11, fill: COLOR.ink }, regression ? fmt(v) : pct(v, 0)));
      });
      const mid = x0 + (shown.length * bar) / 2;
      svg.append(s("text", { x: mid, y: height + 28, "text-anchor": "middle", "font-size": 13,
                             "font-weight": 600, fill: COLOR.ink }, name),
        s("text", { x: mid, y: height + 44, "text-anchor": "middle", "font-size": 11,
                    fill: COLOR.muted }, `${num(g.count)} rows${g.in_pass_fail ? "" : " · not judged"}`));
    });
    const key = h("div", { class: "key" }, shown.map(([, label, color]) =>
      h("span", {}, h("span", { class: "sw", css: { "border-color": color, "border-top-width": "8px" } }), label)));
    return [svg, key];
  }

  /** A figure against its limit: a bar on a scale wide enough for both, the limit marked. */
  function gauge(label, value, limit, kind) {
    const top = kind === "min" ? 1 : Math.max(0.2, (limit || 0) * 1.25, (value || 0) * 1.25);
    const at = (x) => `${(100 * Math.max(0, Math.min(x, top))) / top}%`;
    const svg = s("svg", { width: "100%", height: 40, role: "img", class: "gauge" });
    const bad = value != null && limit != null && (kind === "max" ? value > limit : value < limit);
    svg.append(s("rect", { x: 0, y: 6, width: "100%", height: 14, rx: 4, fill: "#eef1f4" }));
    if (value != null) {
      svg.append(s("rect", { x: 0, y: 6, width: at(value), height: 14, rx: 4,
                             fill: bad ? COLOR.bad : COLOR.good }));
    }
    if (limit != null) {
      svg.append(s("line", { x1: at(limit), x2: at(limit), y1: 0, y2: 26, stroke: COLOR.ink,
                             "stroke-width": 2 }));
    }
    for (const tick of [0, top / 2, top]) {
      svg.append(s("text", { x: at(tick), y: 36, "font-size": 10, fill: COLOR.muted,
                             "text-anchor": tick === 0 ? "start" : tick === top ? "end" : "middle" },
        tick.toFixed(2)));
    }
    const verdict = value == null ? "not judged (fewer than two groups large enough)"
      : `${value.toFixed(3)}${limit == null ? " (no limit set)"
        : bad ? ` — beyond the limit (${kind} ${limit})` : ` — within the limit (${kind} ${limit})`}`;
    return h("div", { class: "gauge-row" }, h("div", { class: "split-label" }, `${label}: ${verdict}`), svg);
  }

  /** The judged figures of one attribute (and the report's overall skill) against limits. */
  function auditGauges(report, a, th) {
    if (report.kind === "regression") {
      return [
        gauge("MAE ratio (largest group's over the smallest's)", a.mae_ratio, th.mae_ratio_max,
          "max"),
        a.mae_difference != null && th.mae_difference_max != null
          ? gauge("MAE difference (largest minus smallest, label units)", a.mae_difference,
            th.mae_difference_max, "max") : null,
        report.r2 != null ? gauge("R² over all rows (a constant scores 0 or less)", report.r2,
          th.r2_min, "min") : null,
      ];
    }
    return [
      gauge("equalized-odds difference (largest gap in TPR or FPR)",
        a.equalized_odds_difference, th.equalized_odds_difference_max, "max"),
      gauge("demographic-parity difference (gap in selection rate)",
        a.demographic_parity_difference, th.demographic_parity_difference_max, "max"),
      a.demographic_parity_ratio != null && th.demographic_parity_ratio_min != null
        ? gauge("demographic-parity ratio", a.demographic_parity_ratio,
          th.demographic_parity_ratio_min, "min") : null,
      report.balanced_accuracy != null && report.kind === "multiclass"
        // Its floor depends on the classes that occur (audit.py `_multiclass_skill`).
        ? gauge("balanced accuracy over all rows (mean recall; a constant scores 1 / classes)",
          report.balanced_accuracy, report.balanced_accuracy_floor, "min")
        : report.balanced_accuracy != null
        ? gauge("balanced accuracy over all rows", report.balanced_accuracy,
          th.balanced_accuracy_min, "min") : null,
    ];
  }

  function auditCard(title, audit) {
    const report = audit.report;
    const th = report.thresholds || {};
    const attributes = Object.entries(report.attributes || {});
    const regression = report.kind === "regression";
    return h("div", { class: "card audit", "data-scope": audit.scope },
      h("h2", {}, `${title} · model v${audit.model_version} `,
        h("span", { class: `verdict ${audit.passed ? "pass" : "fail"}` },
          audit.passed ? "passed" : "failed")),
      h("p", { class: "sub" }, `${num(report.n)} rows, audited ${clock(seconds(audit.audited_at), true)} UTC`
        + (audit.scope === "live" ? (regression
          ? " — served values, outcomes not known yet: each group's mean answer only."
          : " — served answers, outcomes not known yet: selection rates only.")
          : " — rows the version never learned, with their outcomes.")),
      audit.reasons?.length ? h("div", { class: "reasons" }, audit.reasons.join("; ")) : null,
      attributes.length ? attributes.map(([name, a]) => h("div", { class: "attribute" },
        h("h3", {}, `By ${name}`),
        h("div", { class: "audit-grid" },
          h("div", {}, groupBars(a.groups, regression)),
          h("div", {}, auditGauges(report, a, th),
            [...(a.notes || [])].map((n) => h("p", { class: "notes" }, n))))))
        : empty("This task declares no sensitive attribute."),
      (report.notes || []).length ? h("p", { class: "notes" }, report.notes.join(" ")) : null);
  }

  async function renderAudits(task) {
    const latest = await api(`tasks/${enc(task)}/audits/latest`);
    const nodes = [];
    if (latest.candidate) nodes.push(auditCard("Latest candidate audit", latest.candidate));
    if (latest.live) nodes.push(auditCard("Latest live audit", latest.live));
    if (!nodes.length) {
      nodes.push(h("div", { class: "card" }, h("h2", {}, `Fairness audit · ${task}`),
        empty("No audit yet: a task with sensitive attributes is audited as each version "
          + "appears, and its champion's answers periodically.")));
    }
    return { nodes };
  }

  // ---------------------------------------------------------------------------------------
  // Lineage of a prediction id

  const dl = (pairs) => h("dl", {}, pairs.filter(([, v]) => v != null && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));

  /** Horizontal bars: each input's contribution to the answer's score (its unit: `unit`). */
  function contributions(explained) {
    const items = explained.contributions.slice(0, 14);
    const maxAbs = Math.max(...items.map((c) => Math.abs(c.contribution)), 1e-9);
    const row = 24;
    const labelW = 300;
    const half = 260;
    const width = labelW + 2 * half + 70;
    const svg = s("svg", { viewBox: `0 0 ${width} ${items.length * row + 16}`, width,
                           height: items.length * row + 16, role: "img", id: "contributions" });
    const mid = labelW + half;
    svg.append(s("line", { x1: mid, x2: mid, y1: 0, y2: items.length * row + 6, stroke: COLOR.muted }));
    items.forEach((c, i) => {
      const y = i * row + 4;
      const w = (Math.abs(c.contribution) / maxAbs) * half;
      const positive = c.contribution >= 0;
      const value = c.value == null ? "" : ` = ${typeof c.value === "number"
        ? Number(c.value.toPrecision(4)) : c.value}`;
      svg.append(
        s("text", { x: labelW - 8, y: y + 15, "text-anchor": "end", "font-size": 12, fill: COLOR.ink },
          `${c.feature}${value}`),
        s("rect", { x: positive ? mid : mid - w, y, width: Math.max(1, w), height: row - 6, rx: 3,
                    fill: positive ? "#c0392b" : "#2e86c1" }),
        s("text", { x: positive ? mid + w + 4 : mid - w - 4, y: y + 14, "font-size": 11,
                    "text-anchor": positive ? "start" : "end", fill: COLOR.muted },
          c.contribution.toFixed(3)));
    });
    return svg;
  }

  async function lineageOf(id) {
    const [found, explained] = await Promise.all([
      api(`predictions/${enc(id)}`),
      api(`predictions/${enc(id)}/explanation`).catch(() => null),
    ]);
    const p = found.prediction;
    const m = found.model;
    // A classifier's probability and class (a multiclass answer: the class and its
    // probability), or a regression's value (its label).
    const answer = p.probabilities ? `class ${p.label} (p = ${Math.max(...Object.values(p.probabilities)).toFixed(3)})`
      : p.probability == null ? `value ${p.label}`
      : `p = ${p.probability.toFixed(3)} → ${p.probability >= 0.5 ? 1 : 0}`;
    const flow = h("div", { class: "flow", id: "lineage-flow" },
      h("div", { class: "node" }, h("div", { class: "t" }, "prediction"),
        h("div", { class: "big" }, answer),
        dl([["id", h("span", { class: "mono" }, p.prediction_id)], ["served", `${clock(seconds(p.served_at), true)} UTC`],
            ["by", p.role], ["entity", p.entity_id], ["position", num(p.position)]])),
      h("div", { class: "arrow" }, "→"),
      h("div", { class: "node", css: { "border-top-color": STATUS_COLOR[m.status] || COLOR.ink } },
        h("div", { class: "t" }, "answered by"),
        h("div", { class: "big", id: "lineage-model" }, `model v${m.model_version}`),
        dl([["status now", m.status], ["learner", m.config], ["trained", `${clock(seconds(m.trained_at), true)} UTC`],
            ["artifact", h("span", { class: "mono" }, m.artifact_sha256.slice(0, 16) + "…")],
            ["audit", m.audit ? (m.audit.passed ? "passed" : "failed") : "none"]])),
      h("div", { class: "arrow" }, "→"),
      h("div", { class: "node", css: { "border-top-color": COLOR.shadow } }, h("div", { class: "t" }, "learned from"),
        h("div", { class: "big" }, `${num(found.data.labelled_events_learned)} labels`),
        dl([["stream", found.data.stream], ["positions", found.data.first_position == null
          ? `up to ${num(found.data.last_position)}`
          : `${num(found.data.first_position)} – ${num(found.data.last_position)}`],
            ["pipeline", h("span", { class: "mono" }, found.pipeline.version.slice(0, 12))],
            ["spec now", found.pipeline.version === found.pipeline.current_spec_version ? "same" : "changed since"]])));
    const ancestors = h("div", { class: "chips" },
      h("span", { class: "chip" }, `v${m.model_version}`),
      found.ancestors.map((a) => ["←", h("span", { class: "chip", title: a.artifact_sha256 }, `v${a.model_version}`)]),
      found.ancestors.length ? null : h("span", { class: "hint" },
        "no parent: a learner started afresh (a challenger after a drift, or the task's first)"));
    const decisions = found.decisions.length
      ? h("ul", { class: "trail" }, found.decisions.map((d) => h("li", {},
        h("span", { class: "when" }, `${clock(seconds(d.decided_at), true)}`),
        h("span", {}, h("span", { class: "badge", css: { background: badgeColor(d.type) } }, d.type)),
        h("span", { class: "what" }, `by ${d.decided_by}: ${(d.reasons || []).join("; ")}`))))
      : empty("No decision on this version.");
    return [
      flow,
      h("h3", {}, "Ancestry (each version continues the one before)"), ancestors,
      h("h3", {}, `Decisions on v${m.model_version}`), decisions,
      h("h3", {}, `Why this answer: each input's contribution (${explained ? explained.unit : "none"})`),
      explained ? contributions(explained) : empty("No explanation for this model."),
      explained ? h("p", { class: "notes", id: "explanation-notes" }, explanationNotes(explained)) : null,
    ];
  }

  /** How an explanation's terms add up, in its kind's words. */
  function explanationNotes(e) {
    const bias = `bias ${e.bias.toFixed(3)}`;
    if (e.kind === "regression") {
      return `${bias}, total ${e.value.toPrecision(5)}: the value answered. Red pushes it up, blue down.`;
    }
    if (e.kind === "multiclass") {
      const served = e.classes.find((c) => c.class === e.class).served_probability;
      return `${bias}, total log-odds ${e.logit.toFixed(3)} of class ${e.class} against the rest `
        + `(its own model's P = ${e.own_probability.toFixed(3)}); over every class, `
        + `P(${e.class}) = ${e.probability.toFixed(3)} as published`
        + (served == null ? "" : `, ${served.toFixed(3)} as served`)
        + `. Red pushes towards ${e.class}, blue away from it.`;
    }
    return `${bias}, total log-odds ${e.logit.toFixed(3)} → p = ${e.probability.toFixed(3)}. `
      + "Red pushes towards 1, blue towards 0.";
  }

  async function renderLineage(task) {
    const routing = await api(`tasks/${enc(task)}/routing`);
    const arms = [routing.champion, routing.canary].filter(Boolean);
    const recent = (await Promise.all(arms.map((a) =>
      api(`tasks/${enc(task)}/models/${a.model_version}/predictions`, { limit: 6 })
        .then((r) => r.predictions).catch(() => [])))).flat()
      .sort((a, b) => b.position - a.position).slice(0, 10);
    const wanted = hashParams().get("prediction") || "";
    const input = h("input", { id: "prediction-id", value: wanted, placeholder: "a prediction id (uuid)",
                               spellcheck: "false", "aria-label": "prediction id" });
    const out = h("div", { id: "lineage-out" });
    const show = async (id) => {
      if (!id) return;
      input.value = id;
      out.replaceChildren(h("p", { class: "empty" }, "reading…"));
      try {
        out.replaceChildren(...await lineageOf(id.trim()));
      } catch (exc) {
        out.replaceChildren(h("p", { class: "error" }, exc.status === 404
          ? "Governance knows no prediction with this id." : exc.message));
      }
      out.dataset.ready = "1";
    };
    const form = h("form", { class: "lookup", onsubmit: (e) => {
      e.preventDefault();
      setHash({ prediction: input.value.trim() || null });
    } }, input, h("button", { type: "submit" }, "Trace"));
    const card = h("div", { class: "card" },
      h("h2", {}, `Lineage of a prediction · ${task}`),
      h("p", { class: "sub" }, "From an answer a caller got to the model version that gave it, the "
        + "data that version learned, its ancestors and the decisions taken on it."),
      form,
      recent.length ? h("div", { class: "chips" }, h("span", { class: "hint" }, "newest answers:"),
        recent.map((p) => h("button", { type: "button", class: "chip mono", title: `v${p.model_version} ${p.role}`,
                                        onclick: () => setHash({ prediction: p.prediction_id }) },
          p.prediction_id.slice(0, 8)))) : null,
      out);
    return { nodes: [card], after: [() => show(wanted)] };
  }

  // ---------------------------------------------------------------------------------------
  // The decision trail

  function badgeColor(type) {
    if (type === "ModelPromoted" || type === "ApprovalGranted") return COLOR.good;
    if (type === "ModelRolledBack" || type === "PromotionRefused" || type === "ApprovalRejected") return COLOR.bad;
    if (type.startsWith("Canary")) return COLOR.canary;
    if (type.startsWith("Shadow")) return COLOR.shadow;
    if (type === "DriftDetected" || type.startsWith("Config")) return COLOR.drift;
    if (type === "AuditCompleted") return "#2f5d8a";
    return "#7b8794";
  }

  function describe(event) {
    const p = event.payload;
    const v = p.model_version != null ? `v${p.model_version} ` : "";
    switch (event.type) {
      case "DriftDetected":
        return `at labelled row ${num(p.at_labelled)} (${p.detector})`;
      case "ConfigSwitched":
        return `race: ${p.from_config} → ${p.to_config} at labelled row ${num(p.at_labelled)}`;
      case "ConfigDropped":
        return `search dropped ${p.config} at labelled row ${num(p.at_labelled)}`;
      case "AuditCompleted":
        return `${v}${p.scope}: ${p.passed ? "passed" : `failed: ${(p.reasons || []).join("; ")}`}`;
      case "ModelTrained":
        return `${v}${p.config || ""}, ${num(p.n_learned_total)} labels learned`
          + (p.role === "challenger" ? " (challenger)" : "");
      case "TaskRegistered":
        return `spec ${String(p.version).slice(0, 12)}`;
      case "PromotionRefused":
        return `${v}by ${p.decided_by}: ${(p.reasons || []).join("; ")}`;
      case "FlagChanged":
        return `flag ${p.key} ${p.flag ? `set to ${JSON.stringify(p.flag.value)}` : "removed"} `
          + `by ${p.decided_by}: ${p.reason}`;
      case "ServedScored":
        return `${num(p.window)} served rows to position ${num(p.to_position)}`;
      default: {
        const outcome = p.outcome ? `→ ${String(p.outcome).replace("_", " ")} ` : "";
        const weight = p.weight != null ? `${p.weight}% ` : "";
        const by = p.decided_by || p.by;
        return `${v}${outcome}${weight}${by ? `by ${by}` : ""}${p.reason ? `: ${p.reason}` : ""}`;
      }
    }
  }

  function evidence(event) {
    const e = event.payload.evidence;
    if (!e || typeof e !== "object") return null;
    const keys = ["n", "n_champion", "n_canary", "accuracy_champion", "accuracy_canary", "effect", "p_value"];
    const shown = keys.filter((k) => e[k] != null)
      .map((k) => `${k} ${typeof e[k] === "number" && !Number.isInteger(e[k]) ? e[k].toFixed(3) : e[k]}`);
    return shown.length ? h("div", { class: "ev" }, shown.join(" · ")) : null;
  }

  async function renderTrail(task) {
    const chosen = (hashParams().get("show") || "decisions,audits,models,alarms").split(",");
    const types = Object.entries(TRAIL_GROUPS).filter(([g]) => chosen.includes(g)).flatMap(([, t]) => t);
    const events = types.length ? await trail(task, types) : [];
    const newest = events.slice().reverse();
    const filters = h("div", { class: "filters" }, Object.keys(TRAIL_GROUPS).map((group) => {
      const box = h("input", { type: "checkbox", checked: chosen.includes(group) ? "checked" : null,
        onchange: () => {
          const next = Object.keys(TRAIL_GROUPS).filter((g) =>
            (g === group ? box.checked : chosen.includes(g)));
          setHash({ show: next.join(",") });
        } });
      return h("label", {}, box, ` ${group}`);
    }));
    const list = h("ul", { class: "trail", id: "trail-list" }, newest.slice(0, 400).map((e) => h("li", { "data-type": e.type },
      h("span", { class: "when" }, `${clock(when(e), true)} · #${num(e.position)}`),
      h("span", {}, h("span", { class: "badge", css: { background: badgeColor(e.type) } }, e.type)),
      h("span", { class: "what" }, describe(e), evidence(e)))));
    const card = h("div", { class: "card" },
      h("h2", {}, `Decision trail · ${task}`),
      h("p", { class: "sub" }, `Every decision, audit, model and alarm of the task, newest first, as `
        + `stored (${num(events.length)} events; the whole trail, measurements and data too, is `
        + `GET /v1/tasks/${task}/trail).`),
      filters,
      events.length ? list : empty("Nothing yet."),
      newest.length > 400 ? h("p", { class: "notes" }, `Showing the newest 400 of ${num(newest.length)}.`) : null);
    return { nodes: [card] };
  }

  const RENDER = {
    accuracy: renderAccuracy,
    routing: renderRouting,
    audits: renderAudits,
    lineage: renderLineage,
    trail: renderTrail,
  };

  // ---------------------------------------------------------------------------------------
  // Wiring

  document.addEventListener("DOMContentLoaded", () => {
    $("#signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("#key").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      $("#key").value = "";
      start();
    });
    $("#signout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      clearInterval(state.timer);
      signin("The key is forgotten.");
    });
    $("#refresh").addEventListener("click", () => render());
    $("#task").addEventListener("change", (e) => setHash({ task: e.target.value, prediction: null }));
    window.addEventListener("hashchange", () => {
      if (sessionStorage.getItem(KEY)) route();
    });
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        for (const plot of state.plots) {
          const box = plot.root.parentElement;
          if (box) plot.setSize({ width: Math.max(600, box.clientWidth), height: 420 });
        }
      }, 200);
    });
    if (sessionStorage.getItem(KEY)) start();
    else signin();
  });
})();
