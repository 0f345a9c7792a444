// The build service's page: the build list, a build (its timeline, logs and
// error), and the operators' view. It reads the same API as every client,
// in the Connect protocol under /api (see package web), and routes itself
// by the address bar, so that a build's URL is a deep link and the back
// button works.

const main = document.getElementById("main");

// ---------------------------------------------------------------- the API

class APIError extends Error {
  constructor(code, message, status) {
    super(message || code || "request failed");
    this.code = code || "unknown";
    this.status = status;
  }
}

function csrf() {
  const m = document.cookie.match(/(?:^|; )buildsvc_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

function headers(contentType) {
  return { "Content-Type": contentType, "Connect-Protocol-Version": "1", "X-Csrf-Token": csrf() };
}

// call makes a unary call: service "Build" or "AdminService".
async function call(service, method, body) {
  const r = await fetch(`/api/build.v1.${service}/${method}`, {
    method: "POST", headers: headers("application/json"), body: JSON.stringify(body || {}),
  });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new APIError(j.code, j.message, r.status);
  return j;
}

// stream makes a server-streaming call and calls onMessage for each
// message; it resolves when the stream ends, rejects with its error.
async function stream(service, method, body, onMessage, signal) {
  const payload = new TextEncoder().encode(JSON.stringify(body || {}));
  const frame = new Uint8Array(5 + payload.length);
  new DataView(frame.buffer).setUint32(1, payload.length);
  frame.set(payload, 5);
  const r = await fetch(`/api/build.v1.${service}/${method}`, {
    method: "POST", headers: headers("application/connect+json"), body: frame, signal,
  });
  if (!r.ok) {
    const j = await r.json().catch(() => ({}));
    throw new APIError(j.code, j.message, r.status);
  }
  const reader = r.body.getReader();
  let buf = new Uint8Array(0);
  const dec = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const next = new Uint8Array(buf.length + value.length);
    next.set(buf);
    next.set(value, buf.length);
    buf = next;
    while (buf.length >= 5) {
      const flags = buf[0];
      const len = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(1);
      if (buf.length < 5 + len) break;
      const msg = JSON.parse(dec.decode(buf.subarray(5, 5 + len)) || "{}");
      buf = buf.slice(5 + len);
      if (flags & 2) {
        if (msg.error) throw new APIError(msg.error.code, msg.error.message);
        return;
      }
      onMessage(msg);
    }
  }
}

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const STATES = ["queued", "resolving", "building", "pushing", "succeeded", "failed", "cancelled", "interrupted"];
const ENDED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

// stateName is a BuildState's short name: BUILD_STATE_FAILED -> failed.
function stateName(s) {
  return String(s || "BUILD_STATE_UNSPECIFIED").replace("BUILD_STATE_", "").toLowerCase();
}

function stateBadge(s) {
  const n = stateName(s);
  return el("span", { class: `state s-${n}`, "data-state": n }, n);
}

function ts(t) {
  return t ? new Date(t) : null;
}

function fmtTime(t) {
  const d = ts(t);
  return d ? d.toLocaleString() : "";
}

function fmtDur(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${Math.round(s - 60 * m)}s`;
}

function fmtBytes(n) {
  if (!isFinite(n) || n < 0) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function shortCommit(c) {
  return c ? c.slice(0, 12) : "";
}

function copyButton(text, label) {
  return el("button", {
    class: "copy", type: "button", "aria-label": `copy ${label}`,
    onclick: async (e) => {
      try {
        await navigator.clipboard.writeText(text);
        e.target.textContent = "copied";
      } catch {
        e.target.textContent = "select and copy";
      }
      setTimeout(() => { e.target.textContent = "copy"; }, 1500);
    },
  }, "copy");
}

function showError(err) {
  if (err.code === "unauthenticated") {
    const here = location.pathname + location.search;
    return el("div", { class: "banner", role: "alert" },
      "Sign in first: open the sign-in link the server's operator gave you (for the local stack, WEB_URL in .stack/env), or ",
      el("a", { href: `/session?next=${encodeURIComponent(here)}` }, "sign in with your client certificate"),
      ". ", el("span", { class: "muted" }, err.message));
  }
  return el("div", { class: "error", role: "alert" }, el("h2", {}, "The server said no"), el("pre", {}, `${err.code}: ${err.message}`));
}

// poller calls load now and then every ms while the page is visible (a
// hidden tab asks the server nothing), and at once when it shows again.
// stop ends it.
function poller(load, ms) {
  let stopped = false;
  let timer = 0;
  let busy = false;
  const run = async () => {
    clearTimeout(timer);
    if (stopped || busy) return;
    busy = true;
    try {
      await load(() => stopped);
    } finally {
      busy = false;
    }
    if (!stopped && document.visibilityState !== "hidden") timer = setTimeout(run, ms);
  };
  const onVisible = () => { if (document.visibilityState === "visible") run(); };
  document.addEventListener("visibilitychange", onVisible);
  run();
  return { stop() { stopped = true; clearTimeout(timer); document.removeEventListener("visibilitychange", onVisible); } };
}

// ---------------------------------------------------------------- routing

let current = null; // the page shown: its stop() ends its polls and streams

function navigate(url, replace) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a");
  if (!a || a.target || a.getAttribute("href")?.startsWith("#") || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const u = new URL(a.href, location.href);
  if (u.origin !== location.origin || u.pathname.startsWith("/api/") || u.pathname.startsWith("/session")) return;
  e.preventDefault();
  navigate(u.pathname + u.search);
});
window.addEventListener("popstate", render);

// signedIn shows the sign-out button while the browser has a session.
function signedIn() {
  const who = document.getElementById("who");
  if (!csrf()) {
    who.replaceChildren();
    return;
  }
  who.replaceChildren(el("button", {
    type: "button", id: "sign-out",
    onclick: async () => {
      await fetch("/session/end", { method: "POST" }).catch(() => {});
      navigate("/", true);
    },
  }, "Sign out"));
}

function render() {
  if (current) current.stop();
  signedIn();
  const p = location.pathname;
  for (const a of document.querySelectorAll("[data-nav]")) {
    const on = (a.dataset.nav === "list" && (p === "/" || p.startsWith("/builds"))) || (a.dataset.nav === "operators" && p === "/operators");
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const m = p.match(/^\/builds\/([^/]+)$/);
  if (m) current = buildPage(decodeURIComponent(m[1]));
  else if (p === "/operators") current = operatorsPage();
  else current = listPage();
}

// ---------------------------------------------------------------- the list

const PAGE_SIZES = [10, 25, 50, 100];

function listPage() {
  const q = new URLSearchParams(location.search);
  const state = q.get("state") || "";
  const repo = q.get("repo") || "";
  const token = q.get("page") || "";
  const size = Math.min(100, Math.max(1, parseInt(q.get("size") || "25", 10) || 25));
  document.title = "Builds · buildsvc";

  const stateSel = el("select", { id: "f-state", name: "state" },
    el("option", { value: "" }, "any"), ...STATES.map((s) => el("option", { value: s, selected: s === state }, s)));
  const repoIn = el("input", { id: "f-repo", name: "repo", type: "text", value: repo, placeholder: "https://git.example/team/app.git", size: 36 });
  const sizes = PAGE_SIZES.includes(size) ? PAGE_SIZES : [...PAGE_SIZES, size].sort((a, b) => a - b);
  const sizeSel = el("select", { id: "f-size", name: "size" }, ...sizes.map((n) => el("option", { value: n, selected: n === size }, n)));
  // filters is the query of the list with these filters (and no page).
  const filters = (st, rp, sz) => {
    const n = new URLSearchParams();
    if (st) n.set("state", st);
    if (rp) n.set("repo", rp);
    if (sz !== 25) n.set("size", sz);
    return "/" + (n.toString() ? "?" + n : "");
  };
  const apply = () => navigate(filters(stateSel.value, repoIn.value.trim(), Number(sizeSel.value)));
  stateSel.addEventListener("change", apply);
  sizeSel.addEventListener("change", apply);
  const form = el("form", { class: "filters", role: "search", "aria-label": "Filter the builds", onsubmit: (e) => { e.preventDefault(); apply(); } },
    el("label", { for: "f-state" }, "State", stateSel),
    el("label", { for: "f-repo" }, "Repository", repoIn),
    el("label", { for: "f-size" }, "Per page", sizeSel),
    el("button", { type: "submit" }, "Filter"));
  const tbody = el("tbody");
  const table = el("table", { class: "builds", "aria-label": "Builds, newest first" },
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "State"), el("th", { scope: "col" }, "Build"), el("th", { scope: "col", class: "opt" }, "Repository"),
      el("th", { scope: "col", class: "opt" }, "Image"), el("th", { scope: "col" }, "Created"), el("th", { scope: "col", class: "opt" }, "Took"))),
    tbody);
  const pager = el("div", { class: "pager" });
  const status = el("p", { class: "muted", "aria-live": "polite" });
  main.replaceChildren(el("h1", {}, "Builds"), form, table, pager, status);

  return poller(async (stopped) => {
    try {
      const req = { pageSize: size };
      if (state) req.states = ["BUILD_STATE_" + state.toUpperCase()];
      if (repo) req.gitRepo = repo;
      if (token) req.pageToken = token;
      const resp = await call("Build", "ListBuilds", req);
      if (stopped()) return;
      const rows = (resp.builds || []).map((b) => {
        const st = stateName(b.state);
        const end = ts(b.endTime) || (ENDED.has(st) ? null : new Date());
        const took = ts(b.startTime) && end ? fmtDur(end - ts(b.startTime)) : "";
        const id = b.buildId;
        return el("tr", { "data-build": id },
          el("td", {}, stateBadge(b.state)),
          el("td", { class: "id" }, el("a", { href: `/builds/${encodeURIComponent(id)}` }, id)),
          el("td", { class: "opt" }, b.request?.gitRepo || "", " ", el("span", { class: "muted mono" }, shortCommit(b.commit))),
          el("td", { class: "opt" }, b.request?.imageTag || ""),
          el("td", {}, fmtTime(b.createTime)),
          el("td", { class: "opt" }, took));
      });
      tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No builds."))]));
      const links = [];
      if (token) links.push(el("a", { href: filters(state, repo, size), id: "newest" }, "← Newest builds"));
      if (resp.nextPageToken) {
        const n = new URLSearchParams(location.search);
        n.set("page", resp.nextPageToken);
        links.push(el("a", { href: "/?" + n, rel: "next", id: "older" }, "Older builds →"));
      }
      pager.replaceChildren(...links);
      status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (!stopped()) status.replaceChildren(showError(err));
    }
  }, 2000);
}

// ---------------------------------------------------------------- a build

function buildPage(id) {
  const ctl = new AbortController();
  let stopped = false;
  document.title = `Build ${id} · buildsvc`;
  const head = el("div");
  const errorBox = el("div");
  const phases = el("div", { class: "phases", "aria-label": "Time by phase" });
  const timeline = el("div", { class: "timeline", role: "list", "aria-label": "Timeline of the build's steps" });
  const stepSel = el("select", { id: "log-step", "aria-label": "Logs of step" }, el("option", { value: "" }, "all steps"));
  const search = el("input", { id: "log-search", type: "search", placeholder: "search the logs", "aria-label": "Search the logs" });
  const logs = el("pre", { class: "logs", id: "logs", tabindex: "0", "aria-label": "Logs", "aria-live": "off" });
  main.replaceChildren(el("p", {}, el("a", { href: "/" }, "← Builds")), head, errorBox,
    el("h2", {}, "Phases"), phases,
    el("h2", {}, "Timeline"), el("p", { class: "tl-legend" }, "Bars: blue ran, striped cached, red failed, light blue running."), timeline,
    el("h2", {}, "Logs"), el("div", { class: "logs-bar" }, stepSel, search), logs);

  const vertices = new Map(); // digest -> {name, started, completed, cached, error}
  const order = [];
  const out = new Map(); // digest -> text
  const states = []; // {state, time, message}
  let info = null;
  let result = null;
  let berr = null;
  let dirty = false;

  function renderHead() {
    const b = info || {};
    const st = stateName(states.length ? states[states.length - 1].state : b.state);
    const req = b.request || {};
    const facts = el("dl", { class: "facts" });
    const add = (k, v) => { if (v !== undefined && v !== null && v !== "") facts.append(el("dt", {}, k), el("dd", {}, v)); };
    add("State", stateBadge("BUILD_STATE_" + st.toUpperCase()));
    add("Repository", req.gitRepo);
    add("Ref", req.gitCommit);
    const commit = b.commit || (states.find((s) => s.commit) || {}).commit;
    if (commit) add("Commit", el("span", { class: "mono" }, commit));
    add("Tag", req.imageTag);
    add("Package", req.package);
    const res = result || b.result;
    if (res?.image) add("Image", el("span", {}, el("code", { id: "image" }, res.image), copyButton(res.image, "image")));
    if (res?.digest) add("Digest", el("span", {}, el("code", { id: "digest" }, res.digest), copyButton(res.digest, "digest")));
    add("Builder", b.builder || res?.builder);
    add("Created", fmtTime(b.createTime));
    if (b.labels && Object.keys(b.labels).length) add("Labels", Object.entries(b.labels).map(([k, v]) => `${k}=${v}`).join(", "));
    const cancel = ENDED.has(st) ? null : el("button", {
      class: "danger", type: "button", id: "cancel",
      onclick: async (e) => {
        e.target.disabled = true;
        e.target.textContent = "Cancelling…";
        try {
          await call("Build", "CancelBuild", { buildId: id });
        } catch (err) {
          errorBox.replaceChildren(showError(err));
          e.target.disabled = false;
          e.target.textContent = "Cancel build";
        }
      },
    }, "Cancel build");
    head.replaceChildren(el("h1", {}, "Build ", el("span", { class: "mono" }, id)), facts, cancel ? el("p", {}, cancel) : "");
    const e = berr || b.error;
    if (e) {
      errorBox.replaceChildren(el("section", { class: "error", role: "alert", id: "build-error" },
        el("h2", {}, `${st === "failed" ? "Failed" : st === "cancelled" ? "Cancelled" : "Ended"}: ${e.reason || e.code || ""}`),
        e.step ? el("p", {}, "Step: ", el("code", {}, e.step), e.exitCode ? ` (exit code ${e.exitCode})` : "") : "",
        el("pre", {}, e.message || ""),
        e.logTail?.length ? el("pre", { class: "mono" }, e.logTail.join("\n")) : ""));
    }
  }

  function renderPhases() {
    const items = [];
    for (let i = 0; i < states.length; i++) {
      const s = states[i];
      const n = stateName(s.state);
      if (ENDED.has(n)) continue;
      const end = i + 1 < states.length ? ts(states[i + 1].time) : new Date();
      const prev = items.find((x) => x.n === n);
      const ms = end - ts(s.time);
      if (prev) prev.ms += ms;
      else items.push({ n, ms });
    }
    phases.replaceChildren(...items.map((x) => el("span", {}, el("strong", {}, x.n), " ", fmtDur(x.ms))));
  }

  // byStart is the steps' digests in the order they started.
  function byStart() {
    const at = (d) => (vertices.get(d)?.started ? ts(vertices.get(d).started).getTime() : Infinity);
    return [...order].sort((a, b) => at(a) - at(b));
  }

  function renderTimeline() {
    const vs = byStart().map((d) => vertices.get(d)).filter((v) => v.started);
    if (!vs.length) {
      timeline.replaceChildren(el("p", { class: "muted" }, "No steps yet."));
      return;
    }
    const t0 = Math.min(...vs.map((v) => ts(v.started)));
    const now = new Date();
    const t1 = Math.max(...vs.map((v) => (v.completed ? ts(v.completed) : now)), t0 + 1);
    const span = t1 - t0;
    timeline.replaceChildren(...vs.map((v) => {
      const s = ts(v.started) - t0;
      const e = (v.completed ? ts(v.completed) : now) - t0;
      const cls = v.error ? "failed" : v.cached ? "cached" : v.completed ? "" : "open";
      const took = v.completed ? fmtDur(ts(v.completed) - ts(v.started)) : "running";
      const label = `${v.name}: ${v.cached ? "cached" : took}${v.error ? ", failed" : ""}`;
      // Placed through the CSSOM: the page's CSP allows no style
      // attributes.
      const bar = el("span", { class: `tl-bar ${cls}` });
      bar.style.left = `${(100 * s / span).toFixed(2)}%`;
      bar.style.width = `${Math.max(0.3, 100 * (e - s) / span).toFixed(2)}%`;
      return el("div", { class: "tl-row", role: "listitem", "data-vertex": v.digest },
        el("span", { class: "tl-name", title: label },
          el("span", { class: "tl-took" }, `${v.cached ? "cached" : took}${v.error ? ", failed" : ""}`), " ", v.name),
        el("span", { class: "tl-track", title: label, "aria-hidden": "true" }, bar));
    }));
  }

  function renderStepOptions() {
    const have = new Set([...stepSel.options].map((o) => o.value));
    for (const d of byStart()) {
      if (!have.has(d) && out.has(d)) stepSel.append(el("option", { value: d }, vertices.get(d)?.name || d));
    }
  }

  function renderLogs() {
    const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
    const step = stepSel.value;
    const needle = search.value.trim().toLowerCase();
    const frag = document.createDocumentFragment();
    for (const d of byStart()) {
      if (step && d !== step) continue;
      const text = out.get(d);
      if (!text) continue;
      if (!step) frag.append(el("span", { class: "step-head" }, `# ${vertices.get(d)?.name || d}\n`));
      for (const line of text.split("\n")) {
        if (needle && !line.toLowerCase().includes(needle)) continue;
        if (!needle) {
          frag.append(line + "\n");
          continue;
        }
        const i = line.toLowerCase().indexOf(needle);
        frag.append(line.slice(0, i), el("mark", {}, line.slice(i, i + needle.length)), line.slice(i + needle.length) + "\n");
      }
    }
    logs.replaceChildren(frag);
    if (atBottom) logs.scrollTop = logs.scrollHeight;
  }

  stepSel.addEventListener("change", renderLogs);
  search.addEventListener("input", renderLogs);

  function onEvent(e) {
    if (e.state) states.push({ state: e.state.state, time: e.time, message: e.state.message, commit: e.state.commit });
    if (e.vertex) {
      const v = e.vertex;
      if (!vertices.has(v.digest)) order.push(v.digest);
      vertices.set(v.digest, { ...vertices.get(v.digest), ...v });
    }
    if (e.log) {
      let text = "";
      try {
        text = new TextDecoder().decode(Uint8Array.from(atob(e.log.data || ""), (c) => c.charCodeAt(0)));
      } catch { text = ""; }
      const d = e.log.vertex || "";
      if (!vertices.has(d)) {
        vertices.set(d, { digest: d, name: "output" });
        order.push(d);
      }
      out.set(d, (out.get(d) || "") + text);
    }
    if (e.result) result = e.result;
    if (e.error) berr = e.error;
    dirty = true;
  }

  // Repaint at most every 200 ms: a fast log does not cost a repaint per
  // event.
  const paint = setInterval(() => {
    if (!dirty) return;
    dirty = false;
    renderHead();
    renderPhases();
    renderTimeline();
    renderStepOptions();
    renderLogs();
  }, 200);

  (async () => {
    try {
      info = await call("Build", "GetBuild", { buildId: id });
      renderHead();
      await stream("Build", "WatchBuild", { buildId: id }, onEvent, ctl.signal);
      info = await call("Build", "GetBuild", { buildId: id });
      dirty = true;
    } catch (err) {
      if (!stopped) errorBox.replaceChildren(showError(err));
    }
  })();
  return { stop() { stopped = true; ctl.abort(); clearInterval(paint); } };
}

// ---------------------------------------------------------------- operators

function operatorsPage() {
  document.title = "Operators · buildsvc";
  const body = el("div");
  main.replaceChildren(el("h1", {}, "Operators"), body);
  return poller(async (stopped) => {
    try {
      const s = await call("AdminService", "GetStatus", {});
      if (stopped()) return;
      const workers = s.workers || [];
      const healthy = workers.filter((w) => w.healthy).length;
      const card = (id, label, n, note) => el("div", { class: "card", id },
        el("div", { class: "muted" }, label), el("div", { class: "n" }, String(n ?? 0)), note ? el("div", { class: "muted" }, note) : "");
      const cols = ["Worker", "Health", "Running", "Builds given", "Cache on disk", "Checked", "Why out"];
      const cell = (i, attrs, ...children) => el("td", { ...attrs, "data-label": cols[i] }, ...children);
      const ws = workers.map((w) => el("tr", { "data-worker": w.name },
        cell(0, { class: "mono" }, w.name),
        cell(1, {}, el("span", { class: `state ${w.healthy ? "s-succeeded" : "s-failed"}`, "data-health": w.healthy ? "healthy" : "out" }, w.healthy ? "healthy" : "out")),
        cell(2, {}, String(w.running || 0)),
        cell(3, {}, String(w.builds || 0)),
        cell(4, { class: "disk" }, Number(w.diskBytes) > 0 ? fmtBytes(Number(w.diskBytes)) : "unknown"),
        cell(5, {}, fmtTime(w.checkedTime)),
        cell(6, { class: "why" }, w.error || "")));
      body.replaceChildren(
        s.replica ? el("p", {}, "Replica ", el("code", {}, s.replica), ": queue and running counts are of every replica sharing the queue; the workers are this replica's.") : "",
        el("div", { class: "cards" },
          card("c-queued", "Queued", s.queued, "waiting for a slot"),
          card("c-running", "Running", s.running, `at most ${s.maxConcurrent || "?"} at once per server`),
          card("c-here", "Running here", s.runningHere),
          card("c-workers", "Healthy workers", workers.length ? `${healthy} of ${workers.length}` : "—", workers.length ? "" : "no worker pool: one buildkitd, or a builder per build")),
        el("h2", {}, "Workers"),
        workers.length ? el("table", { class: "workers", "aria-label": "Workers" },
          el("thead", {}, el("tr", {}, ...cols.map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, ws)) : el("p", { class: "muted" }, "This server has no pool of workers."),
        el("p", { class: "muted" }, `Updated ${new Date().toLocaleTimeString()}`));
    } catch (err) {
      if (!stopped()) body.replaceChildren(showError(err));
    }
  }, 3000);
}

render();
