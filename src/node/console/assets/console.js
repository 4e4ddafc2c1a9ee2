// Tandem operator console: plain JavaScript over the admin API, no framework, no build step.
//
// How it works (see docs/console.md):
// - `api()` is the one way to the node: `fetch` with `Authorization: Bearer TOKEN` (the token typed once, kept
//   in sessionStorage for this tab). Every refusal comes from the API's route table; hiding write buttons from
//   a reader is only a courtesy.
// - `tick()` polls `GET /v1/status` every second, redraws the banners and the page on show, and notices when
//   the node stops answering (then it offers the other members' consoles, from the last membership seen).
// - `follow()` reads `GET /v1/watch` (NDJSON) with a streaming `fetch`, because `EventSource` cannot send
//   the token in a header; each new event refreshes the history.
// - Pages are hash routes (#cluster, #terminals, #history, #backups, #boot); each has a `load` function.
// - Everything shown is built with `el()` (textContent): no server text is ever parsed as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "tandem-console-token";
  const POLL_MS = 1000;
  const HISTORY_PAGE = 25;
  const PAGES = ["cluster", "terminals", "history", "backups", "boot"];

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    who: null,
    self: null,
    status: null,
    members: [],
    failures: 0,
    ticks: 0,
    primaryLost: null,
    probing: false,
    downSince: null,
    page: "cluster",
    history: { to: null, older: [], filter: {} },
    watch: null,
    timer: null,
  };

  // ---- small helpers -------------------------------------------------------------------------------------

  const $ = (selector) => document.querySelector(selector);

  /** An element with attributes (`class`, `data-*`, properties) and children (strings become text). */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function replace(target, ...children) {
    const node = typeof target === "string" ? $(target) : target;
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
  }

  function badge(word, kind) {
    return el("span", { class: `badge state-${kind || word}` }, word);
  }

  function card(label, value, field) {
    return el("div", { class: "card", "data-field": field },
      el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  }

  /** RFC 3339 UTC to the second, as the CLI prints times. */
  function time(ms) {
    if (ms === undefined || ms === null) return "—";
    return new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");
  }

  function ago(ms) {
    if (ms === undefined || ms === null) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (seconds < 90) return `${seconds} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }

  function duration(seconds) {
    if (seconds % 86400 === 0) return `${seconds / 86400} d`;
    if (seconds % 3600 === 0) return `${seconds / 3600} h`;
    if (seconds % 60 === 0) return `${seconds / 60} min`;
    return `${seconds} s`;
  }

  function bytes(n) {
    if (n === undefined || n === null) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function canWrite() {
    return state.who && (state.who.role === "operator" || state.who.role === "admin");
  }

  function notice(text, kind) {
    const banner = $("#notice");
    banner.className = `banner banner-${kind || "info"}`;
    replace(banner, el("p", {}, text));
    banner.hidden = false;
  }

  // ---- the API -------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const message = body && body.message ? body.message : `HTTP ${status}`;
      super(body && body.hint ? `${message} (hint: ${body.hint})` : message);
      this.status = status;
      this.code = body && body.code;
    }
  }

  /** Calls the admin API; answers the parsed JSON, throws ApiError (an answer) or TypeError (no answer). */
  async function api(method, path, body, options) {
    const headers = {};
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      signal: options && options.signal,
    });
    if (options && options.raw) {
      if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
      return response;
    }
    const text = await response.text();
    let value = null;
    try {
      value = text ? JSON.parse(text, exactIntegers) : null;
    } catch (_) {
      value = { message: text };
    }
    if (!response.ok) throw new ApiError(response.status, value);
    return value;
  }

  /** Node ids are u64: beyond 2^53 a JavaScript number would round them, so those stay their decimal text. */
  function exactIntegers(_key, value, context) {
    if (typeof value === "number" && !Number.isSafeInteger(value) && Number.isInteger(value) && context
      && typeof context.source === "string") return context.source;
    return value;
  }

  // ---- log in and out ------------------------------------------------------------------------------------

  async function start() {
    try {
      state.who = await api("GET", "/v1/whoami");
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        showLogin(state.token ? "The saved token was not accepted; log in again." : "");
        return;
      }
      showLogin(`This node did not answer: ${error.message}`);
      return;
    }
    state.self = await api("GET", "/v1/node").catch(() => null);
    $("#login").hidden = true;
    $("#nav").hidden = false;
    $("#logout").hidden = state.who.open;
    replace("#who", state.who.open ? "open node (no tokens): admin" : `${state.who.name} (${state.who.role})`);
    document.body.dataset.role = state.who.role;
    if (!canWrite()) document.querySelectorAll("[data-write]").forEach((node) => node.remove());
    route();
    tick();
    if (state.timer === null) {
      state.timer = setInterval(tick, POLL_MS);
      follow();
    }
  }

  function showLogin(message) {
    $("#login").hidden = false;
    $("#nav").hidden = true;
    document.querySelectorAll(".page").forEach((page) => (page.hidden = true));
    replace("#login-error", message || "");
    $("#token").focus();
  }

  async function login(event) {
    event.preventDefault();
    const token = $("#token").value.trim();
    state.token = token;
    try {
      await api("GET", "/v1/whoami");
    } catch (error) {
      state.token = "";
      replace("#login-error", error.status === 401 ? "This token is not accepted by this node." : error.message);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#token").value = "";
    start();
  }

  function logout() {
    sessionStorage.removeItem(TOKEN_KEY);
    // Reloading drops every timer, stream and rendered row of the old session.
    location.hash = "";
    location.reload();
  }

  // ---- pages ---------------------------------------------------------------------------------------------

  function route() {
    $("#notice").hidden = true;
    const name = location.hash.replace(/^#/, "");
    state.page = PAGES.includes(name) ? name : "cluster";
    for (const page of PAGES) $(`#page-${page}`).hidden = page !== state.page;
    document.querySelectorAll("#nav a").forEach((link) => {
      if (link.dataset.page === state.page) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    });
    load(state.page);
  }

  function load(page) {
    const loaders = { cluster: renderCluster, terminals: loadTerminals, history: loadHistory,
      backups: renderBackups, boot: loadBoot };
    Promise.resolve(loaders[page]()).catch((error) => pageError(error));
  }

  function pageError(error) {
    if (error instanceof ApiError && error.status === 401) {
      showLogin("The token is no longer accepted; log in again.");
    } else if (error instanceof ApiError) {
      notice(error.message, "warn");
    }
  }

  // ---- live: status polling and the watch stream -----------------------------------------------------------

  async function tick() {
    let status;
    try {
      status = await api("GET", "/v1/status");
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return pageError(error);
      state.failures += 1;
      if (state.failures >= 2) showDown(error);
      return;
    }
    state.failures = 0;
    state.downSince = null;
    $("#unreachable").hidden = true;
    state.status = status;
    state.members = membersOf(status);
    state.ticks += 1;
    if (status.role === "mirror" && state.ticks % 5 === 1) probePrimary();
    replace("#node-name", `${status.name} · ${status.role}`);
    showDegraded(status);
    replace("#footer", `Node ${status.name} (id ${status.id}) · revision ${status.revision} · updated `,
      time(Date.now()), state.watch ? " · following changes" : "");
    if (state.page === "cluster") renderCluster();
    if (state.page === "backups") renderBackups();
    if (state.page === "terminals") loadTerminals().catch(pageError);
    if (state.page === "boot") loadBoot().catch(pageError);
  }

  /**
   * A mirror is a Raft learner: it never campaigns, so its status keeps naming a primary that died (it only
   * listens). Every few seconds the page asks it for a linearizable read of a document that does not exist: the
   * mirror must ask the primary for its commit point, so a 404 means the primary answered, and `no_leader`
   * (after the read timeout, 5 s) says it did not, naming what the mirror last heard.
   */
  async function probePrimary() {
    if (state.probing) return;
    state.probing = true;
    try {
      await api("GET", "/v1/docs/terminals/console-primary-probe?consistency=linearizable");
      state.primaryLost = null;
    } catch (error) {
      if (error instanceof ApiError) {
        state.primaryLost = error.code === "no_leader" || error.code === "behind" ? error.message : null;
      }
    } finally {
      state.probing = false;
    }
  }

  /** This node and its peers as one list: the members as this node sees them. */
  function membersOf(status) {
    const own = state.self || {};
    const self = { id: status.id, name: status.name, role: status.role, self: true,
      state: status.raft_state, reachable: true, sync: "self", api_addr: own.api_addr || location.host,
      peer_addr: own.peer_addr, boot_addr: own.boot_addr, leader: status.leader === status.id };
    const primaryLost = status.role === "mirror" && state.primaryLost !== null;
    const peers = (status.peers || []).map((peer) => ({ ...peer, self: false, leader: status.leader === peer.id,
      state: status.leader === peer.id ? "Leader" : "",
      reachable: primaryLost && status.leader === peer.id ? false : peer.reachable }));
    return [self, ...peers];
  }

  function showDown(error) {
    if (!state.downSince) state.downSince = Date.now();
    const banner = $("#unreachable");
    const name = state.status ? state.status.name : location.host;
    const others = state.members.filter((m) => !m.self && m.role !== "witness" && m.api_addr);
    replace(banner,
      el("p", {}, el("strong", {}, `This node (${name}, ${location.host}) is not answering`),
        ` since ${time(state.downSince)} (${error.message}). What is shown below is its last state.`),
      others.length === 0
        ? el("p", {}, "No other data node or mirror is known.")
        : el("p", {}, "Open the console of another member: ",
          others.map((m, i) => [i ? ", " : "", el("a", { href: `http://${m.api_addr}/`, "data-partner": m.name },
            `${m.name} (http://${m.api_addr}/)`)])));
    banner.hidden = false;
  }

  /** The degraded banner: the node's own verdict, or an unreachable member, with the recovery from docs. */
  function showDegraded(status) {
    const banner = $("#degraded");
    const lost = (status.peers || []).filter((p) => p.reachable === false || p.sync === "disconnected"
      || p.sync === "refused");
    if (status.mode === "joining") {
      replace(banner, el("p", {}, el("strong", {}, "Not a member yet: "), "this node waits to be added. On a member, run ",
        el("code", {}, `tandem servers add ${status.name} --api ${(state.self && state.self.api_addr) || location.host}`), "."));
      banner.hidden = false;
      return;
    }
    // A mirror's cluster has one voter: losing it leaves no leader without the node calling itself degraded.
    const leaderless = status.leader === null || status.leader === undefined
      || (status.role === "mirror" && state.primaryLost !== null);
    if (!status.degraded && !leaderless && lost.length === 0) {
      banner.hidden = true;
      return;
    }
    const lines = [];
    if (status.degraded || leaderless) {
      lines.push(el("p", {}, el("strong", {}, "Degraded: "),
        status.degraded_reason || (status.role === "mirror" && state.primaryLost)
          || "no leader: this node cannot reach the cluster's voters; serving its last state",
        lost.length ? ` (${lost.map((p) => p.name).join(", ")} unreachable)` : ""));
      lines.push(el("p", {}, "Writes are refused; boots and local reads continue from this node's last state. ",
        status.role === "mirror"
          ? "If the primary is really gone (or fenced), promote this mirror: stop it, run "
          : "If the lost node is really gone (or fenced), continue with this one alone: stop it, run ",
        el("code", {}, 'tandem recover --data-dir DIR --force-standalone --reason "why"'),
        ", and start it again (docs/cluster.md, Recovery procedures)."));
    } else {
      const names = lost.map((p) => `${p.name} (${p.role}) ${p.sync === "refused" ? "refuses this node"
        : "unreachable"}${p.last_contact_ms ? `, last heard ${time(p.last_contact_ms)}` : ""}`);
      const lostNames = new Set(lost.map((p) => p.name));
      const kept = state.members.filter((m) => !lostNames.has(m.name) && m.role !== "mirror").map((m) => m.name);
      lines.push(el("p", {}, el("strong", {}, "Degraded: "), names.join("; "),
        `. The cluster keeps its quorum with ${kept.join(", ")}: writes continue, leader ${status.leader_name || "none"}.`));
      lines.push(el("p", {}, "Start the lost node again. If its disk is lost, re-add it: ",
        el("code", {}, `tandem servers remove ${lost[0].name}`), ", start it on an empty data directory with ",
        el("code", {}, "tandem serve --join …"), ", then ",
        el("code", {}, `tandem servers add ${lost[0].name} --api ADDR`), " (docs/cluster.md, Re-add a failed node)."));
    }
    replace(banner, lines);
    banner.hidden = false;
  }

  /** Follows `GET /v1/watch` as NDJSON; a new event refreshes the history page. Reconnects after a pause. */
  async function follow() {
    const controller = new AbortController();
    state.watch = controller;
    try {
      const response = await api("GET", "/v1/watch?format=ndjson", undefined,
        { raw: true, signal: controller.signal });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          if (line.trim()) onWatchLine(line);
        }
      }
    } catch (_) {
      // The node went away or refused: the status poll says which; try again shortly.
    }
    state.watch = null;
    setTimeout(follow, 2000);
  }

  function onWatchLine(line) {
    let frame;
    try {
      frame = JSON.parse(line);
    } catch (_) {
      return;
    }
    if (frame.heartbeat || frame.error) return;
    if (state.page === "history" && state.history.to === null) loadHistory().catch(pageError);
    if (state.page === "terminals") loadTerminals().catch(pageError);
  }

  // ---- Cluster -------------------------------------------------------------------------------------------

  function renderCluster() {
    const status = state.status;
    if (!status) return;
    const terminals = status.terminals || {};
    const backup = status.backup || {};
    replace("#cluster-summary",
      card("This node", `${status.name} (${status.role})`, "node"),
      card("Mode", status.mode, "mode"),
      card("Leader", status.leader_name || "none", "leader"),
      card("Term", status.term, "term"),
      card("Revision", status.revision, "revision"),
      card("Terminals", `${terminals.green || 0} green, ${terminals.red || 0} red, ${terminals.offline || 0} offline`,
        "terminals"),
      card("Last backup", backup.last_success_unix ? ago(backup.last_success_unix * 1000)
        : (backup.scheduled ? "none yet" : "not scheduled here"), "backup"));
    const rows = state.members.map((m) => {
      const reachable = m.self ? badge("this node", "yes")
        : m.reachable === true ? badge("yes")
          : m.reachable === false ? badge("no") : badge("unknown");
      const since = !m.self && m.last_contact_ms ? el("div", { class: "muted" }, `last heard ${ago(m.last_contact_ms)}`)
        : null;
      const lag = m.lag_entries === undefined || m.lag_entries === null ? "—"
        : `${m.lag_entries} entries${m.lag_seconds !== null && m.lag_seconds !== undefined
          ? `, ${m.lag_seconds.toFixed(1)} s` : ""}`;
      const stateWord = m.leader ? "leader" : (m.self ? String(m.state || "").toLowerCase() : "");
      const api = m.role === "witness" || !m.api_addr ? m.api_addr
        : el("a", { href: `http://${m.api_addr}/` }, m.api_addr);
      return el("tr", { "data-member": m.name, "data-leader": m.leader ? "true" : "false" },
        el("th", { scope: "row" }, m.name, m.self ? el("span", { class: "muted" }, " (this node)") : null),
        el("td", {}, m.role),
        el("td", {}, stateWord ? badge(stateWord, m.leader ? "leader" : "") : "—"),
        el("td", {}, reachable, since),
        el("td", {}, m.self ? "—" : badge(m.sync.replace("_", " "), m.sync)),
        el("td", {}, lag),
        el("td", { class: "mono" }, api),
        el("td", { class: "mono" }, m.peer_addr || (m.self ? "" : "—")),
        el("td", { class: "mono" }, m.boot_addr || "—"));
    });
    replace("#members tbody", rows);
    replace("#recent", (status.recent_changes || []).map((c) => el("li", {},
      el("strong", {}, `r${c.revision}`), ` ${time(c.timestamp_ms)} · ${c.actor} · `,
      c.reason ? c.reason : el("em", {}, "no reason"), el("span", { class: "muted" }, ` · ${(c.documents || []).join(", ")}`))));
  }

  // ---- Terminals -----------------------------------------------------------------------------------------

  async function loadTerminals() {
    const answer = await api("GET", "/v1/terminals");
    const counts = answer.counts;
    replace("#terminal-counts",
      card("Configured", counts.total, "total"), card("Green", counts.green, "green"),
      card("Red", counts.red, "red"), card("Offline", counts.offline, "offline"));
    const search = $("#terminal-search").value.trim().toLowerCase();
    const filter = $("#terminal-filter").value;
    const shown = answer.terminals.filter((t) => (filter === "all" || t.status === filter)
      && (!search || [t.id, t.mac, t.firmware, t.location, t.model, t.detail]
        .some((v) => v && String(v).toLowerCase().includes(search))));
    replace("#terminals tbody", shown.length === 0
      ? el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No terminal matches."))
      : shown.map((t) => el("tr", { "data-terminal": t.id, "data-status": t.status },
        el("th", { scope: "row" }, t.id),
        el("td", {}, badge(t.status)),
        el("td", { class: "mono" }, t.mac || "—"),
        el("td", {}, t.last_seen_ms ? [time(t.last_seen_ms), el("div", { class: "muted" }, ago(t.last_seen_ms))] : "never"),
        el("td", {}, t.detail || "—"),
        el("td", {}, t.firmware === null ? "—" : String(t.firmware)),
        el("td", {}, t.location === null ? "—" : String(t.location)),
        el("td", {}, `r${t.mod_revision}`))));
  }

  // ---- History -------------------------------------------------------------------------------------------

  async function loadHistory() {
    const query = new URLSearchParams({ limit: String(HISTORY_PAGE), newest_first: "" });
    for (const [key, value] of Object.entries(state.history.filter)) if (value) query.set(key, value);
    if (state.history.to !== null) query.set("to", String(state.history.to));
    const answer = await api("GET", `/v1/history?${query}`);
    const events = answer.events || [];
    replace("#history tbody", events.length === 0
      ? el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No change matches."))
      : events.map((event) => historyRow(event, answer.revision)));
    const lowest = events.length ? events[events.length - 1].revision : null;
    $("#history-older").disabled = events.length < HISTORY_PAGE || lowest <= 1;
    $("#history-older").dataset.to = lowest ? String(lowest - 1) : "";
    $("#history-newer").disabled = state.history.to === null;
    replace("#history-range", events.length
      ? `revisions ${events[0].revision} to ${lowest} of ${answer.revision}` : "");
  }

  function historyRow(event, current) {
    const documents = (event.changes || []).map((c) => `${c.collection}/${c.id}${c.document === null ? " (deleted)" : ""}`);
    const actions = [
      el("button", { type: "button", class: "small", "data-action": "diff",
        onclick: () => showDiff(event.revision - 1, event.revision, `Change set r${event.revision}`) }, "Diff"),
    ];
    if (event.revision < current) {
      actions.push(el("button", { type: "button", class: "small", "data-action": "compare",
        onclick: () => showDiff(event.revision, current, `r${event.revision} compared with now (r${current})`) },
      "Compare with now"));
    }
    if (canWrite()) {
      actions.push(el("button", { type: "button", class: "small", "data-write": true, "data-action": "undo",
        onclick: () => confirmWrite("/v1/undo", { revision: event.revision },
          `Undo the change set of revision ${event.revision}`) }, "Undo this change"));
      if (event.revision < current) {
        actions.push(el("button", { type: "button", class: "small", "data-write": true, "data-action": "revert",
          onclick: () => confirmWrite("/v1/revert", { to: event.revision },
            `Revert the configuration to revision ${event.revision}`) }, "Revert to here"));
      }
    }
    return el("tr", { "data-revision": event.revision },
      el("th", { scope: "row" }, `r${event.revision}`),
      el("td", {}, time(event.timestamp_ms)),
      el("td", {}, event.actor, event.token && event.token !== event.actor
        ? el("div", { class: "muted" }, `token ${event.token}`) : null),
      el("td", { class: "reason" }, event.reason || el("em", { class: "muted" }, "no reason")),
      el("td", { class: "mono" }, documents.join(", ")),
      el("td", {}, el("div", { class: "actions" }, actions)));
  }

  /** A field-level diff of two revisions (the CLI's `tandem diff`, with the values). */
  async function showDiff(from, to, title) {
    const answer = await api("GET", `/v1/diff?from=${from}&to=${to}`).catch((error) => {
      notice(error.message, "warn");
      return null;
    });
    if (!answer) return;
    const detail = $("#detail");
    replace("#detail-title", title);
    const changes = answer.changes || [];
    replace("#detail-body", changes.length === 0
      ? el("p", {}, `No differences between revision ${from} and revision ${to}.`)
      : [el("p", { class: "muted" }, `${changes.length} document(s) differ between revision ${from} and revision ${to}.`),
        ...changes.map(diffDocument)]);
    detail.hidden = false;
    detail.focus();
  }

  function diffDocument(change) {
    const rows = [];
    fieldChanges("", change.before, change.after, 0, rows);
    return el("div", { class: "diff-doc diff", "data-document": `${change.collection}/${change.id}` },
      el("h3", {}, `${change.kind} ${change.collection}/${change.id}`),
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Field"), el("th", { scope: "col" }, "Before"),
          el("th", { scope: "col" }, "After"))),
        el("tbody", {}, rows.map(([kind, path, before, after]) => el("tr", { class: kind },
          el("td", { class: "mono" }, `${{ added: "+", removed: "-", changed: "~" }[kind]} ${path}`),
          el("td", { class: "mono" }, show(before)), el("td", { class: "mono" }, show(after))))))));
  }

  function show(value) {
    return value === undefined ? "" : JSON.stringify(value);
  }

  /** Field paths that differ, objects followed three levels deep (as the CLI's field summary). */
  function fieldChanges(prefix, before, after, depth, out) {
    if (JSON.stringify(before) === JSON.stringify(after)) return;
    const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
    if (!isObject(before) || !isObject(after) || depth > 2) {
      const kind = before === undefined || before === null ? "added" : after === undefined || after === null ? "removed" : "changed";
      out.push([kind, prefix || "(whole document)", before, after]);
      return;
    }
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    for (const key of keys) {
      const path = prefix ? `${prefix}.${key}` : key;
      if (!(key in before)) out.push(["added", path, undefined, after[key]]);
      else if (!(key in after)) out.push(["removed", path, before[key], undefined]);
      else fieldChanges(path, before[key], after[key], depth + 1, out);
    }
  }

  // ---- Preview, confirm, apply (the CLI's flow: dry run, then the same request with if_revision) --------

  let pending = null;

  async function confirmWrite(endpoint, body, heading) {
    let preview;
    try {
      preview = await api("POST", endpoint, { ...body, reason: "preview", dry_run: true });
    } catch (error) {
      notice(`${heading}: ${error.message}`, "warn");
      return;
    }
    pending = { endpoint, body, revision: preview.revision, unchanged: preview.outcome === "unchanged" };
    replace("#confirm-title", heading);
    replace("#confirm-preview", previewText(heading, preview, preview.revision));
    replace("#confirm-error", "");
    $("#confirm-apply").disabled = pending.unchanged;
    $("#confirm-reason").value = "";
    $("#confirm").showModal();
    $("#confirm-reason").focus();
  }

  async function applyPending(event) {
    event.preventDefault();
    if (!pending || pending.unchanged) return;
    const reason = $("#confirm-reason").value.trim();
    if (!reason) {
      replace("#confirm-error", "Say why: the reason is recorded in the history.");
      return;
    }
    $("#confirm-apply").disabled = true;
    try {
      const answer = await api("POST", pending.endpoint,
        { ...pending.body, reason, dry_run: false, if_revision: pending.revision });
      $("#confirm").close();
      notice(`Applied as revision ${answer.revision} (${(answer.changes || []).length} documents changed).`);
      pending = null;
      state.history.to = null;
      if (state.page === "history") await loadHistory();
    } catch (error) {
      replace("#confirm-error", error.status === 412
        ? `${error.message} Close and preview again.` : error.message);
    } finally {
      $("#confirm-apply").disabled = !pending || pending.unchanged;
    }
  }

  /** The preview as `tandem undo|revert` prints it: a count line per collection, then `+ id`, `~ id`, `- id`. */
  function previewText(heading, preview, revision) {
    const changes = preview.changes || [];
    let out = `${heading}, computed at revision ${revision}:\n`;
    if (changes.length === 0) return `${out}No change: the configuration is already like that.\n`;
    const byCollection = new Map();
    for (const change of changes) {
      if (!byCollection.has(change.collection)) byCollection.set(change.collection, []);
      byCollection.get(change.collection).push(change);
    }
    for (const collection of [...byCollection.keys()].sort()) {
      const list = byCollection.get(collection);
      const count = (kind) => list.filter((c) => c.kind === kind).length;
      out += `${collection.padEnd(20)} ${count("created")} created, ${count("changed")} changed, ${count("deleted")} deleted\n`;
      for (const [kind, sign] of [["created", "+"], ["changed", "~"], ["deleted", "-"]]) {
        for (const change of list.filter((c) => c.kind === kind)) {
          const size = kind !== "deleted" && change.bytes !== undefined && change.bytes !== null ? `  (${change.bytes} bytes)` : "";
          out += `  ${sign} ${change.id}${size}\n`;
        }
      }
    }
    return `${out}${changes.length} documents to change.\n`;
  }

  // ---- Backups -------------------------------------------------------------------------------------------

  function renderBackups() {
    const status = state.status;
    if (!status) return;
    const b = status.backup || {};
    const cards = [];
    if (!b.scheduled) {
      cards.push(card("Schedule", "not scheduled on this node", "schedule"));
    } else {
      cards.push(card("Schedule", `every ${duration(b.interval_seconds)}, keep ${b.retention}`, "schedule"));
      cards.push(card("Directory", b.dir || "—", "dir"));
      const next = b.last_attempt_unix ? (b.last_attempt_unix + b.interval_seconds) * 1000 : null;
      cards.push(card("Next run", next ? (next > Date.now() ? `in ${Math.round((next - Date.now()) / 1000)} s` : "due now") : "soon", "next"));
    }
    cards.push(card("Last backup", b.last_success_unix
      ? `${ago(b.last_success_unix * 1000)} (r${b.last_revision}, ${bytes(b.last_size)})` : "none", "last"));
    cards.push(card("Verified", b.last_success_unix ? "read back after writing" : "—", "verified"));
    const outcomes = { written: "written", unchanged: "nothing changed: skipped",
      not_leader: "another node leads: it writes the backups", failed: "failed" };
    cards.push(card("Last attempt", b.last_outcome
      ? `${outcomes[b.last_outcome] || b.last_outcome}, ${ago(b.last_attempt_unix * 1000)}` : "—", "outcome"));
    cards.push(card("Failures", `${b.failures_total || 0}${b.last_error ? `: ${b.last_error}` : ""}`, "failures"));
    replace("#backup-cards", cards);
  }

  /** Streams `GET /v1/backup` into a file download (the node verifies nothing here: `tandem backup verify`). */
  async function backupNow() {
    const button = $("#backup-now");
    button.disabled = true;
    replace("#backup-progress", "Writing the backup…");
    try {
      const response = await api("GET", "/v1/backup", undefined, { raw: true });
      const disposition = response.headers.get("Content-Disposition") || "";
      const match = disposition.match(/filename="?([^";]+)"?/);
      const blob = await response.blob();
      const link = el("a", { href: URL.createObjectURL(blob), download: match ? match[1] : "tandem.backup" });
      document.body.append(link);
      link.click();
      link.remove();
      replace("#backup-progress", `Downloaded ${bytes(blob.size)} at revision ${response.headers.get("X-Tandem-Revision")}.`);
    } catch (error) {
      replace("#backup-progress", `Backup failed: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  // ---- Boot server ---------------------------------------------------------------------------------------

  async function loadBoot() {
    const answer = await api("GET", "/v1/boot");
    const http = answer.http;
    const tftp = answer.tftp;
    const total = http.requests.reduce((sum, r) => sum + r.count, 0);
    replace("#boot-cards",
      card("HTTP requests", total, "http_requests"), card("HTTP bytes served", bytes(http.bytes_served), "http_bytes"),
      card("HTTP connections open", http.connections_open, "http_open"),
      card("Downloads active", http.downloads_active, "downloads"), card("Heartbeats", http.heartbeats, "heartbeats"),
      card("TFTP transfers active", tftp.active, "tftp_active"),
      card("TFTP completed / failed", `${tftp.completed} / ${tftp.failed}`, "tftp_done"),
      card("TFTP bytes", bytes(tftp.bytes), "tftp_bytes"), card("TFTP retransmits", tftp.retransmits, "tftp_retransmits"));
    replace("#boot-requests tbody", http.requests.length === 0
      ? el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No HTTP boot request since this node started."))
      : http.requests.map((r) => el("tr", {}, el("td", {}, r.kind), el("td", {}, r.outcome), el("td", {}, r.count))));
    replace("#boot-firmware tbody", answer.firmware.length === 0
      ? el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No firmware configured."))
      : answer.firmware.map((f) => el("tr", { "data-firmware": f.name },
        el("th", { scope: "row" }, f.name), el("td", {}, f.version === null ? "—" : String(f.version)),
        el("td", {}, bytes(f.size)), el("td", {}, f.stored_bytes === null ? badge("missing", "no") : badge("stored", "yes")),
        el("td", { class: "mono" }, f.blob))));
  }

  // ---- wiring --------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", logout);
    window.addEventListener("hashchange", route);
    $("#terminal-search").addEventListener("input", () => loadTerminals().catch(pageError));
    $("#terminal-filter").addEventListener("change", () => loadTerminals().catch(pageError));
    $("#history-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      // Times are typed in the browser's time zone; the API takes Unix milliseconds.
      const ms = (input) => (input.value ? String(new Date(input.value).getTime()) : "");
      state.history = { to: null, older: [], filter: {
        collection: $("#hf-collection").value.trim(), id: $("#hf-id").value.trim(), actor: $("#hf-actor").value.trim(),
        since: ms($("#hf-since")), until: ms($("#hf-until")) } };
      loadHistory().catch(pageError);
    });
    $("#hf-clear").addEventListener("click", () => {
      $("#history-filter").reset();
      state.history = { to: null, older: [], filter: {} };
      loadHistory().catch(pageError);
    });
    $("#history-older").addEventListener("click", () => {
      state.history.older.push(state.history.to);
      state.history.to = Number($("#history-older").dataset.to);
      loadHistory().catch(pageError);
    });
    $("#history-newer").addEventListener("click", () => {
      state.history.to = state.history.older.length ? state.history.older.pop() : null;
      loadHistory().catch(pageError);
    });
    $("#confirm-form").addEventListener("submit", applyPending);
    $("#confirm-cancel").addEventListener("click", () => {
      pending = null;
      $("#confirm").close();
    });
    const backup = $("#backup-now");
    if (backup) backup.addEventListener("click", backupNow);
    start();
  });
})();
