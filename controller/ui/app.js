// Dimmer's web UI: one page, three views (#/ overview, #/r/NAME on-call,
// #/h/NAME history), no framework, nothing loaded from elsewhere. Every
// call carries the signed-in bearer token; the API enforces the roles, the
// page only hides what a role may not do.
"use strict";

const ROLES = ["proxy", "viewer", "operator", "admin"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};
const pct = (bp) => `${(bp / 100).toFixed(bp % 100 ? 2 : 0)}%`;
const rate = (x) => (x == null ? "–" : `${(100 * x).toFixed(2)}%`);
const ms = (x) => (x == null ? "–" : `${x.toFixed(1)} ms`);
const ago = (m) => {
  const s = Math.max(0, Math.round(m / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
};
const fmtE = (e) => (e == null ? "–" : e >= 1e5 || (e > 0 && e < 0.01) ? e.toExponential(1) : e >= 100 ? e.toFixed(0) : e.toFixed(2));

let me = null; // {name, role}
let live = null; // the AbortController of the open stream
let lastLive = 0; // when the page last had fresh data from the controller
let liveWhy = ""; // why it has not, if it has not

// ---- liveness: the page says when what it shows is old ----

const hhmmss = (t) => new Date(t).toLocaleTimeString([], { hour12: false });

function fresh() {
  lastLive = Date.now();
  liveWhy = "";
  $("#live").hidden = true;
  $("#main").classList.remove("stale");
}

function stale(why) {
  if (why) liveWhy = why;
  const b = $("#live");
  b.textContent = `Not live since ${lastLive ? hhmmss(lastLive) : "the page opened"} — retrying${liveWhy ? ` (${liveWhy})` : ""}. The numbers below are old.`;
  b.hidden = false;
  $("#main").classList.add("stale");
}

// Updates come every second: three missed and the page says it is stale,
// whatever the connection believes (a frozen controller keeps it open).
setInterval(() => {
  if (live && !live.signal.aborted && lastLive && Date.now() - lastLive > 3500) stale("no update from the controller");
}, 1000);

const token = () => sessionStorage.getItem("dimmer-token") || "";
// Signed in with the company's provider: the session is an HttpOnly cookie
// the page never sees; a change carries the session's CSRF secret.
let csrf = "";
const auth = () => (token() ? { authorization: `Bearer ${token()}` } : csrf ? { "x-dimmer-csrf": csrf } : {});
const may = (role) => me && ROLES.indexOf(me.role) >= ROLES.indexOf(role);

async function api(path, opts = {}) {
  const resp = await fetch(path, {
    ...opts,
    headers: { ...(opts.headers || {}), ...auth() },
  });
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { error: text }; }
  if (!resp.ok) throw new Error((body && body.error) || `${resp.status}`);
  return body;
}

// Server-sent events over fetch, so the token goes in a header, not the URL.
async function stream(path, onUpdate) {
  if (live) live.abort();
  const ctl = new AbortController();
  live = ctl;
  while (!ctl.signal.aborted) {
    try {
      const resp = await fetch(path, { headers: auth(), signal: ctl.signal });
      if (!resp.ok) {
        let why = `${resp.status}`;
        try { why = (await resp.json()).error || why; } catch { /* not JSON */ }
        throw new Error(`live updates refused: ${why}`);
      }
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const data = buf.slice(0, cut).split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          buf = buf.slice(cut + 2);
          if (data) {
            onUpdate(JSON.parse(data));
            fresh();
          }
        }
      }
      if (!ctl.signal.aborted) stale("the controller closed the stream");
    } catch (e) {
      if (ctl.signal.aborted) return;
      stale(e.message === "Failed to fetch" || e.name === "TypeError" ? "the controller does not answer" : e.message);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ---- sign-in ----

async function signIn(t) {
  sessionStorage.setItem("dimmer-token", t);
  try {
    me = await api("/v1/whoami");
  } catch (e) {
    me = null;
    sessionStorage.removeItem("dimmer-token");
    main(el("p", { class: "error", id: "signin-error" }, `Sign-in refused: ${e.message}`));
    return;
  }
  showWho();
  route();
}

function showWho() {
  $("#signin").hidden = !!me;
  $("#who").hidden = !me;
  if (me) {
    $("#who-name").textContent = me.name;
    $("#who-role").textContent = me.role;
  }
}

function main(...kids) {
  $("#main").replaceChildren(...kids);
}

// ---- overview (the release manager's view) ----

async function showOverview() {
  $("#crumbs").replaceChildren("overview");
  const active = el("div", { class: "scroll" });
  const windows = el("div", { class: "cards" });
  const budgets = el("div");
  const ended = el("div", { class: "scroll" });
  let outcome = "all";
  let team = "all teams";
  const filters = el("div", { class: "filters", id: "ended-filter" });
  const teamFilters = el("div", { class: "filters", id: "ended-team-filter" });
  let last = null;
  main(el("h2", {}, "Active rollouts and flags"), active, el("h2", {}, "Ended"), filters, teamFilters, ended,
    el("h2", {}, "Recent releases"), windows, budgets);
  const paintEnded = () => {
    filters.replaceChildren(...["all", "aborted", "completed"].map((f) =>
      el("button", { type: "button", "aria-pressed": String(f === outcome), "data-outcome": f, onclick: () => { outcome = f; paintEnded(); } }, f)));
    const all = last ? last.finished : [];
    const teams = ["all teams", ...[...new Set(all.map((f) => f.team).filter(Boolean))].sort()];
    teamFilters.replaceChildren(...teams.map((t) =>
      el("button", { type: "button", "aria-pressed": String(t === team), "data-team": t, onclick: () => { team = t; paintEnded(); } }, t)));
    const list = all.filter((f) => (outcome === "all" || f.outcome === outcome) && (team === "all teams" || f.team === team));
    ended.replaceChildren(list.length
      ? el("table", { id: "ended" }, el("tr", {}, ...["name", "kind", "team", "outcome", "decided by", "when (UTC)", "why", ""].map((h) => el("th", {}, h))),
        ...list.map((f) => el("tr", {},
          el("td", {}, el("a", { href: `#/r/${encodeURIComponent(f.name)}` }, f.name)),
          el("td", {}, f.kind),
          el("td", {}, f.team || ""),
          el("td", {}, el("span", { class: `pill phase-${f.outcome}` }, f.outcome)),
          el("td", {}, f.decided_by),
          el("td", {}, new Date(f.at_ms).toISOString().replace("T", " ").slice(0, 19)),
          el("td", {}, f.reason),
          el("td", {}, el("a", { href: `#/h/${encodeURIComponent(f.name)}` }, "history")))))
      : el("p", { class: "hint" }, outcome === "all" && team === "all teams" ? "Nothing has ended yet." : "Nothing ended matches the filter."));
  };
  const paint = async () => {
    const o = await api("/v1/overview");
    last = o;
    paintEnded();
    const rows = o.active.map((a) =>
      el("tr", {},
        el("td", {}, el("a", { href: `#/r/${encodeURIComponent(a.name)}` }, a.name)),
        el("td", {}, a.kind),
        el("td", {}, el("span", { class: `pill phase-${a.phase}` }, a.phase)),
        el("td", {}, `${a.step + 1}/${a.steps}`),
        el("td", {}, pct(a.weight_bp)),
        el("td", {}, ago(a.in_step_ms))));
    active.replaceChildren(rows.length
      ? el("table", { id: "active" }, el("tr", {}, ...["name", "kind", "phase", "step", "weight", "in step"].map((h) => el("th", {}, h))), ...rows)
      : el("p", { class: "hint" }, "Nothing is being rolled out."));
    windows.replaceChildren(...o.windows.map((w) =>
      el("div", { class: "card" },
        el("h3", {}, `Last ${w.days} days`),
        el("div", { class: "big" }, `${w.completed} completed · ${w.aborted_by_analysis + w.aborted_by_person} aborted`),
        el("div", {}, `${w.started} started; aborted by the analysis ${w.aborted_by_analysis}, by a person ${w.aborted_by_person}`),
        el("div", {}, `median time from a bad step's start to its abort: ${w.median_detection_ms == null ? "–" : ago(w.median_detection_ms)}`))));
    budgets.replaceChildren(...(o.budgets.length ? [el("h2", {}, "Error budget used this step"),
      el("table", {}, el("tr", {}, el("th", {}, "rollout"), el("th", {}, "objective"), el("th", {}, "budget used")),
        ...o.budgets.map((b) => el("tr", {}, el("td", {}, b.name), el("td", {}, `${b.objective_percent}%`),
          el("td", { class: b.consumed > 1 ? "bad" : "ok" }, `${(100 * b.consumed).toFixed(0)}%`))))] : []));
  };
  await paint();
  fresh();
  stream("/v1/events", () => paint().catch(() => {}));
}

// ---- one rollout (the on-call view) ----

function chart(title, series, opts = {}) {
  // series: [{cls, points: [[t, y]]}], limit: y of a dashed line
  const W = 400, H = 150, P = 28;
  const all = series.flatMap((s) => s.points).filter((p) => p[1] != null && isFinite(p[1]));
  const ys = all.map((p) => (opts.log ? Math.log10(Math.max(p[1], 1e-3)) : p[1]));
  if (opts.limit != null) ys.push(opts.log ? Math.log10(opts.limit) : opts.limit);
  const ts = all.map((p) => p[0]);
  const [t0, t1] = [Math.min(...ts), Math.max(...ts)];
  let [y0, y1] = [Math.min(0, ...ys), Math.max(...ys, opts.log ? 0 : 1e-9)];
  if (y1 === y0) y1 = y0 + 1;
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - P - 4);
  const y = (v) => H - 14 - ((v - y0) / (y1 - y0)) * (H - 24);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text != null) n.textContent = text;
    svg.append(n);
  };
  const lab = (v) => (opts.log ? fmtE(10 ** v) : opts.fmt ? opts.fmt(v) : v.toFixed(2));
  add("text", { x: 2, y: 10 }, lab(y1));
  add("text", { x: 2, y: H - 14 }, lab(y0));
  if (opts.limit != null) {
    const ly = y(opts.log ? Math.log10(opts.limit) : opts.limit);
    add("line", { x1: P, x2: W - 4, y1: ly, y2: ly, class: "limit" });
  }
  for (const s of series) {
    const pts = s.points.filter((p) => p[1] != null && isFinite(p[1]))
      .map((p) => `${x(p[0]).toFixed(1)},${y(opts.log ? Math.log10(Math.max(p[1], 1e-3)) : p[1]).toFixed(1)}`);
    if (pts.length) add("polyline", { points: pts.join(" "), class: s.cls });
  }
  const legend = el("div", { class: "legend" }, ...series.map((s) => el("span", { class: s.cls === "canary" ? "c" : "s" }, s.label)),
    ...(opts.limit != null ? [el("span", { class: "l" }, opts.limitLabel || "limit")] : []));
  return el("div", { class: "card" }, el("h3", {}, title), svg, legend);
}

// Evidence of safety beside the abort tests: each test's bound on the
// canary's harm, in tolerances, against the line a step up needs (1).
function safetyChart(points, ev) {
  const rows = ev.safety || [];
  if (!rows.length) return [];
  const cap = 20;
  const now = rows.map((r) => `${r.test} ${r.bound_text} ${r.within ? "≤" : ">"} ${r.tolerance_text}`).join(", ");
  const series = rows.map((r, i) => ({
    cls: i === 0 ? "canary" : "stable",
    label: r.test,
    points: points.filter((p) => p.bounds && r.test in p.bounds).map((p) => [p.at_ms, p.bounds[r.test] == null ? cap : Math.min(p.bounds[r.test], cap)]),
  }));
  const card = chart(`evidence of safety: the bound on the canary's harm, in tolerances (steps up at ≤ 1; now ${now})`, series,
    { limit: 1, limitLabel: "tolerance", fmt: (x) => `${x.toFixed(1)}×` });
  card.id = "safety";
  return [card];
}

function nextLine(v, now) {
  if (v.phase === "completed" || v.phase === "aborted") return "Nothing: the rollout is over.";
  if (v.phase === "paused") return "Nothing until someone resumes it.";
  const next = v.steps[v.step + 1];
  const wait = next == null ? "complete" : `go to ${next}%`;
  const until = v.step_started_ms + (v.step_pauses_ms[v.step] || 0);
  const when = until > now ? `not before ${new Date(until).toISOString().slice(11, 19)} UTC (its pause, ${ago(until - now)} from now), ` : "";
  return `It will ${wait} ${when}once the analysis passes with enough data and every bound is within its tolerance${v.reason.includes("approval") ? " and someone approves (promote)" : ""}; it aborts at once if a test crosses its boundary.`;
}

async function showRollout(name) {
  $("#crumbs").replaceChildren(el("a", { href: "#/" }, "overview"), " / ", name, " · ", el("a", { href: `#/h/${encodeURIComponent(name)}` }, "history"));
  const head = el("div", { class: "cards" });
  const reason = el("div", { class: "reason", id: "reason" });
  const next = el("p", { id: "next" });
  const actions = el("div", { class: "actions", id: "actions" });
  const versions = el("div", { class: "scroll" });
  const charts = el("div", { class: "charts" });
  const audit = el("div", { class: "scroll" });
  main(el("h2", { id: "title" }, name), head, reason, next, actions, el("h2", {}, "Versions in this step"), versions, charts,
    el("h2", {}, "Last decisions"), audit);
  const points = [];
  let actionsFor = null;
  const paint = (u) => {
    const v = u.status;
    if (!v) {
      head.replaceChildren(el("p", { class: "error" }, `No rollout named ${name}.`));
      return;
    }
    points.push(...u.series);
    if (points.length > 720) points.splice(0, points.length - 720);
    const last = points[points.length - 1] || {};
    const ev = v.evidence;
    head.replaceChildren(
      el("div", { class: "card" }, el("h3", {}, "state"), el("span", { id: "phase", class: `pill phase-${v.phase}` }, v.phase), " ", el("span", { id: "label" }, v.label)),
      el("div", { class: "card" }, el("h3", {}, "step"), el("div", { class: "big", id: "step" }, `${v.step + 1}/${v.steps.length}`), `steps ${v.steps.map((s) => `${s}%`).join(" → ")}`),
      el("div", { class: "card" }, el("h3", {}, "weight set"), el("div", { class: "big", id: "weight" }, pct(v.weight_bp)),
        el("div", { id: "applied" }, `${v.proxies_applied} of ${v.proxies_live} live proxies have applied revision ${v.revision}`),
        ...((v.proxies_applying || []).length ? [el("div", { class: "applying", id: "applying" }, `applying: ${v.proxies_applying.join(", ")}`)] : []),
        ...(v.proxies_lagging.length ? [el("div", { class: "bad", id: "lagging" }, `lagging: ${v.proxies_lagging.join(", ")}`)] : []),
        ...(v.proxies_stale.length ? [el("div", { class: "bad" }, `stale: ${v.proxies_stale.join(", ")}`)] : [])),
      el("div", { class: "card" }, el("h3", {}, "time in step"), el("div", { class: "big", id: "in-step" }, ago(u.now_ms - v.step_started_ms))));
    reason.textContent = v.reason;
    next.textContent = nextLine(v, u.now_ms);
    const row = (who, n, errRate, p50, p99) => el("tr", {}, el("td", {}, who), el("td", {}, n.toFixed(0)), el("td", {}, rate(errRate)), el("td", {}, ms(p50)), el("td", {}, ms(p99)));
    versions.replaceChildren(el("table", { id: "versions" },
      el("tr", {}, ...["version", "requests", "error rate", "p50", "p99"].map((h) => el("th", {}, h))),
      row(`${v.canary} (${v.is_flag ? "variant" : "canary"})`, ev.canary_requests, last.canary_error_rate, last.canary_p50_ms, last.canary_p99_ms),
      row(`${v.stable} (baseline)`, ev.baseline_requests, last.baseline_error_rate, last.baseline_p50_ms, last.baseline_p99_ms)));
    const at = (f) => points.map((p) => [p.at_ms, f(p)]);
    const limit = last.e_threshold;
    charts.replaceChildren(
      chart("weight", [{ cls: "canary", label: v.canary, points: at((p) => p.weight_bp / 100) }], { fmt: (x) => `${x.toFixed(0)}%` }),
      chart("error rate in the step", [
        { cls: "canary", label: v.canary, points: at((p) => 100 * p.canary_error_rate) },
        { cls: "stable", label: v.stable, points: at((p) => 100 * p.baseline_error_rate) }], { fmt: (x) => `${x.toFixed(2)}%` }),
      chart("latency p50 / p99 (ms)", [
        { cls: "canary", label: `${v.canary} p99`, points: at((p) => p.canary_p99_ms) },
        { cls: "canary", label: `${v.canary} p50`, points: at((p) => p.canary_p50_ms) },
        { cls: "stable", label: `${v.stable} p99`, points: at((p) => p.baseline_p99_ms) },
        { cls: "stable", label: `${v.stable} p50`, points: at((p) => p.baseline_p50_ms) }], { fmt: (x) => x.toFixed(0) }),
      chart(`sequential tests: e-value against the abort boundary (abort at ${fmtE(limit)}; now errors ${fmtE(last.e_errors)}, latency ${fmtE(last.e_latency)})`, [
        { cls: "canary", label: "errors", points: at((p) => p.e_errors) },
        { cls: "stable", label: "latency", points: at((p) => p.e_latency) }], { log: true, limit, limitLabel: "abort at" }),
      ...safetyChart(points, ev),
      chart(`sample ratio: e-value (hold at ${fmtE(limit)})`, [{ cls: "stable", label: "share test", points: at((p) => p.e_share) }], { log: true, limit, limitLabel: "hold at" }),
      ...(points.some((p) => p.burn_rate != null) ? [chart("SLO burn rate", [{ cls: "canary", label: v.canary, points: at((p) => p.burn_rate) }], {})] : []));
    const key = `${v.phase}/${me && me.role}`;
    if (key !== actionsFor) {
      actionsFor = key;
      actions.replaceChildren(...actionButtons(name, v));
    }
    audit.replaceChildren(records(u.audit, true));
  };
  // The page shows the state from the API at once, and its buttons; the
  // stream only keeps it current, and may be refused.
  const enc = encodeURIComponent(name);
  const [status, series, history] = await Promise.all([
    api(`/v1/rollouts/${enc}`).catch(() => null),
    api(`/v1/rollouts/${enc}/series`).catch(() => []),
    api(`/v1/rollouts/${enc}/history`).catch(() => []),
  ]);
  paint({ status, series, audit: history.slice(-8), now_ms: Date.now() });
  fresh();
  stream(`/v1/events?rollout=${enc}`, paint);
}

function actionButtons(name, v) {
  if (!may("operator")) return [el("span", { class: "hint", id: "no-actions" }, "Sign in as an operator to act on this rollout.")];
  const final = v.phase === "completed" || v.phase === "aborted";
  const wins = v.phase === "completed" && v.arm_of && v.weight_bp < 10000;
  const can = {
    pause: v.phase === "progressing",
    resume: v.phase === "paused",
    promote: !final || wins,
    abort: !final,
  };
  return Object.entries(can).filter(([, ok]) => ok).map(([act]) =>
    el("button", { id: `act-${act}`, class: act === "abort" ? "danger" : "", onclick: () => act_(name, act) }, act));
}

function act_(name, act) {
  const dlg = $("#confirm");
  $("#confirm-title").textContent = `${act} ${name}`;
  $("#confirm-reason").value = "";
  $("#confirm-error").textContent = "";
  dlg.showModal();
  $("#confirm-cancel").onclick = () => dlg.close();
  $("#confirm-form").onsubmit = async (e) => {
    e.preventDefault();
    const reason = $("#confirm-reason").value.trim();
    if (!reason) {
      $("#confirm-error").textContent = "A reason is required.";
      return;
    }
    try {
      await api(`/v1/rollouts/${encodeURIComponent(name)}/${act}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ reason }),
      });
      dlg.close();
    } catch (err) {
      $("#confirm-error").textContent = err.message;
    }
  };
}

function records(list, short) {
  const rows = list.slice().reverse().map((r) => {
    const ev = r.evidence || {};
    const numbers = ev.canary_requests || ev.baseline_requests
      ? `canary ${rate(ev.canary_requests ? ev.canary_errors / ev.canary_requests : 0)} of ${ev.canary_requests.toFixed(0)}` +
        (ev.baseline_requests ? ` vs baseline ${rate(ev.baseline_errors / ev.baseline_requests)} of ${ev.baseline_requests.toFixed(0)}` : "") +
        (ev.e_errors != null ? `; e errors ${fmtE(ev.e_errors)}, latency ${fmtE(ev.e_latency)} (abort at ${fmtE(ev.e_threshold)})` : "") +
        (ev.safety || []).map((b, i) => `${i ? "," : "; bounds:"} ${b.test} ${b.bound_text} ${b.within ? "≤" : ">"} ${b.tolerance_text}`).join("")
      : "";
    const hooks = (ev.hooks || []).map((h) => `; hook ${h.name} (${h.kind}) ${h.passed ? "passed" : "failed"}: ${h.detail}`).join("");
    return el("tr", {},
      el("td", {}, r.seq), el("td", {}, new Date(r.at_ms).toISOString().replace("T", " ").slice(0, 19)),
      el("td", {}, r.actor === "controller" ? "analysis" : r.actor), el("td", {}, r.action),
      ...(short ? [] : [el("td", {}, r.rollout), el("td", {}, `${r.from} → ${r.to}`)]),
      el("td", {}, r.reason), el("td", {}, numbers + hooks));
  });
  const heads = short ? ["#", "when (UTC)", "who", "action", "why", "numbers"] : ["#", "when (UTC)", "who", "action", "rollout", "from → to", "why", "numbers"];
  return el("table", { class: "records" }, el("tr", {}, ...heads.map((h) => el("th", {}, h))), ...rows);
}

// ---- history (the review view) ----

async function showHistory(name) {
  if (live) live.abort();
  live = null;
  $("#crumbs").replaceChildren(el("a", { href: "#/" }, "overview"), " / ", el("a", { href: `#/r/${encodeURIComponent(name)}` }, name), " · history");
  const [list, head] = await Promise.all([api(`/v1/rollouts/${encodeURIComponent(name)}/history`), api("/v1/audit/head")]);
  const chain = el("div", { class: "card", id: "chain" }, el("h3", {}, "audit chain"),
    `head: record ${head.seq}, hash ${head.hash.slice(0, 16)}…`);
  if (may("admin")) {
    const out = el("div", { id: "verify" });
    chain.append(el("button", { onclick: async () => {
      try {
        const r = await api("/v1/audit/verify");
        out.replaceChildren(el("span", { class: "ok" }, `verified: ${r.records} records, every link and checkpoint intact`));
      } catch (e) {
        out.replaceChildren(el("span", { class: "bad" }, `verification failed: ${e.message}`));
      }
    } }, "Verify the chain"), out);
  } else {
    chain.append(el("div", { class: "hint" }, "Verifying the chain needs an admin token (dimmer audit verify)."));
  }
  const table = el("div", { class: "scroll" }, records(list, false));
  main(el("h2", {}, `${name}: every decision`), chain, table);
  fresh();
  // No stream here: the history is read again every few seconds, and the
  // page says when it could not be.
  const ctl = new AbortController();
  live = ctl;
  while (!ctl.signal.aborted) {
    await new Promise((r) => setTimeout(r, 2000));
    if (ctl.signal.aborted) return;
    try {
      table.replaceChildren(records(await api(`/v1/rollouts/${encodeURIComponent(name)}/history`), false));
      fresh();
    } catch (e) {
      stale(e.message === "Failed to fetch" || e.name === "TypeError" ? "the controller does not answer" : e.message);
    }
  }
}

// ---- routing ----

function route() {
  if (!me) return;
  const hash = decodeURIComponent(location.hash.slice(1) || "/");
  const [, view, name] = hash.split("/");
  const fail = (e) => main(el("p", { class: "error" }, e.message));
  if (view === "r" && name) showRollout(name).catch(fail);
  else if (view === "h" && name) showHistory(name).catch(fail);
  else showOverview().catch(fail);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("#signin").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("#token").value.trim());
    $("#token").value = "";
  });
  $("#signout").addEventListener("click", async () => {
    if (csrf) {
      await fetch("/auth/logout", { method: "POST", headers: { "x-dimmer-csrf": csrf } }).catch(() => {});
      csrf = "";
    }
    sessionStorage.removeItem("dimmer-token");
    me = null;
    if (live) live.abort();
    fresh();
    showWho();
    main(el("p", { class: "hint" }, "Signed out."));
  });
  if (token()) signIn(token());
  else signedInWithProvider();
});

// The provider's sign-in, when the controller has one: the link to it, and
// the session if this browser has one already.
async function signedInWithProvider() {
  const config = await fetch("/auth/config").catch(() => null);
  if (!config || !config.ok) return;
  $("#sso").hidden = false;
  const resp = await fetch("/auth/session").catch(() => null);
  if (!resp || !resp.ok) return;
  const session = await resp.json();
  csrf = session.csrf;
  me = { name: session.name, role: session.role, teams: session.teams };
  showWho();
  route();
}
