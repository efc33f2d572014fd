// swift-dtm admin UI: plain DOM, no framework, no build step. Served from the coordinator's
// binary under a Content-Security-Policy that allows no inline script and no other origin.
// Everything that comes from the API (gids, URLs, errors, custom data) is attacker-controlled:
// it only ever reaches the page through textContent, attribute setters and DOM nodes, never
// through an HTML parser fed with strings.
"use strict";

(function () {
  const TOKEN_KEY = "dtm-admin-token";
  const API = "/api/admin/transactions";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STATUSES = ["prepared", "submitted", "aborting", "succeed", "failed"];
  const TRANS_TYPES = ["saga", "msg", "tcc", "xa", "workflow"];
  const COMPENSATING_OPS = new Set(["compensate", "cancel", "rollback"]);

  // ---- DOM helpers ----------------------------------------------------------------------

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  function setAttributes(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) {
        node.addEventListener(name.slice(2), value);
      } else {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function show(...nodes) {
    const view = document.getElementById("view");
    clear(view);
    append(view, nodes);
  }

  /** A link to a transaction's page; the gid only ever goes into the fragment, encoded. */
  function txLink(gid) {
    return el("a", { href: "#/tx/" + encodeURIComponent(gid), class: "gid" }, gid);
  }

  function badge(status) {
    return el("span", { class: "badge status-" + cssToken(status) }, status || "—");
  }

  /** A value safe to use inside a class name. */
  function cssToken(text) {
    return String(text || "none").toLowerCase().replace(/[^a-z0-9_-]/g, "_");
  }

  function formatTime(text) {
    if (!text) return "—";
    const date = new Date(text);
    if (isNaN(date.getTime())) return text;
    // Local time, one fixed shape whatever the browser's locale: 2026-11-29 18:00:00.123.
    const pad = (n, width) => String(n).padStart(width || 2, "0");
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) + "." +
      pad(date.getMilliseconds(), 3);
  }

  function table(headers, rows, attrs) {
    return el("table", attrs,
      el("thead", null, el("tr", null, headers.map((h) => el("th", null, h)))),
      el("tbody", null, rows));
  }

  function fields(pairs) {
    return el("dl", { class: "fields" }, pairs.map(([name, value]) => [
      el("dt", null, name),
      el("dd", { "data-field": name }, value instanceof Node ? value : (value === "" || value === undefined || value === null ? "—" : String(value))),
    ]));
  }

  // ---- API access -----------------------------------------------------------------------

  class Unauthorized extends Error {}

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, { method, headers, cache: "no-store", credentials: "omit" });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (response.status === 401) {
      askForToken(body && (body.error || body.message));
      throw new Unauthorized("authentication required");
    }
    if (!response.ok) {
      const message = (body && (body.error || body.message)) || ("HTTP " + response.status);
      throw new APIError(response.status, message);
    }
    return body;
  }

  function askForToken(message) {
    const panel = document.getElementById("token-panel");
    document.getElementById("token-message").textContent =
      (sessionStorage.getItem(TOKEN_KEY) ? "The token was refused" : "This coordinator requires a bearer token") +
      (message ? ": " + message : ".");
    panel.hidden = false;
    document.getElementById("token-input").focus();
  }

  function setUpToken() {
    const form = document.getElementById("token-form");
    const forget = document.getElementById("forget-token");
    forget.hidden = !sessionStorage.getItem(TOKEN_KEY);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("token-input");
      const token = input.value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      input.value = "";
      document.getElementById("token-panel").hidden = true;
      forget.hidden = false;
      route();
    });
    forget.addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      forget.hidden = true;
      route();
    });
  }

  function errorBox(error) {
    if (error instanceof Unauthorized) {
      return el("p", { class: "notice" }, "Enter a bearer token above to continue.");
    }
    return el("p", { class: "error", role: "alert" }, "Error: " + (error && error.message ? error.message : String(error)));
  }

  // ---- Routing --------------------------------------------------------------------------

  let refreshTimer = null;
  let generation = 0;

  function parseHash() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?", 2);
    return { path, params: new URLSearchParams(query || "") };
  }

  function route() {
    generation += 1;
    if (refreshTimer) {
      clearInterval(refreshTimer);
      refreshTimer = null;
    }
    const { path, params } = parseHash();
    if (path.startsWith("/tx/")) {
      let gid;
      try {
        gid = decodeURIComponent(path.slice(4));
      } catch (_) {
        show(el("p", { class: "error" }, "Malformed transaction link."));
        return;
      }
      renderTransaction(gid, generation);
    } else {
      renderList(params, generation);
    }
  }

  // ---- Transaction list -----------------------------------------------------------------

  const FILTERS = ["status", "trans_type", "gid_prefix", "created_from", "created_to", "limit"];

  /** "2026-11-29T18:00" (datetime-local, local time) to RFC 3339 in UTC, whole seconds. */
  function localToRFC3339(value) {
    if (!value) return "";
    const date = new Date(value);
    if (isNaN(date.getTime())) return "";
    return date.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  function rfc3339ToLocal(value) {
    if (!value) return "";
    const date = new Date(value);
    if (isNaN(date.getTime())) return "";
    const pad = (n) => String(n).padStart(2, "0");
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + "T" +
      pad(date.getHours()) + ":" + pad(date.getMinutes());
  }

  function select(name, options, current, anyLabel) {
    return el("select", { name, id: "filter-" + name },
      el("option", { value: "" }, anyLabel),
      options.map((option) => el("option", { value: option, selected: option === current }, option)));
  }

  function renderList(params, gen) {
    // Paging: positions[i] is where page i starts; "" is the first page.
    const state = { positions: [""], page: 0 };
    const filters = {};
    for (const name of FILTERS) filters[name] = params.get(name) || "";

    const form = el("form", { id: "filters", class: "filters" },
      el("label", null, "Status ", select("status", STATUSES, filters.status, "any")),
      el("label", null, "Mode ", select("trans_type", TRANS_TYPES, filters.trans_type, "any")),
      el("label", null, "Gid prefix ", el("input", { name: "gid_prefix", id: "filter-gid_prefix", value: filters.gid_prefix, size: 24 })),
      el("label", null, "Created from ", el("input", { type: "datetime-local", name: "created_from", id: "filter-created_from", value: rfc3339ToLocal(filters.created_from) })),
      el("label", null, "to ", el("input", { type: "datetime-local", name: "created_to", id: "filter-created_to", value: rfc3339ToLocal(filters.created_to) })),
      el("label", null, "Per page ", select("limit", ["10", "20", "50", "100"].concat(
        filters.limit && !["10", "20", "50", "100"].includes(filters.limit) ? [filters.limit] : []), filters.limit, "20")),
      el("button", { type: "submit", id: "apply-filters" }, "Apply"),
      el("button", { type: "button", id: "clear-filters", onclick: () => { location.hash = "#/"; } }, "Clear"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const query = new URLSearchParams();
      for (const name of FILTERS) {
        let value = String(data.get(name) || "").trim();
        if (name === "created_from" || name === "created_to") value = localToRFC3339(value);
        if (value) query.set(name, value);
      }
      const next = "#/" + (query.toString() ? "?" + query.toString() : "");
      if (location.hash === next) route(); else location.hash = next;
    });

    const autoRefresh = el("input", { type: "checkbox", id: "auto-refresh" });
    const prev = el("button", { type: "button", id: "prev-page", disabled: true }, "← Newer");
    const next = el("button", { type: "button", id: "next-page", disabled: true }, "Older →");
    const pageLabel = el("span", { id: "page-label", class: "muted" });
    const results = el("div", { id: "results" }, el("p", { class: "muted" }, "Loading…"));

    async function load() {
      const query = new URLSearchParams();
      for (const name of FILTERS) if (filters[name]) query.set(name, filters[name]);
      if (!filters.limit) query.set("limit", "20");
      const position = state.positions[state.page];
      if (position) query.set("position", position);
      let body;
      try {
        body = await api("GET", API + "?" + query.toString());
      } catch (error) {
        if (gen !== generation) return;
        clear(results);
        results.appendChild(errorBox(error));
        return;
      }
      if (gen !== generation) return;
      const rows = (body && body.transactions) || [];
      const nextPosition = (body && body.next_position) || "";
      state.positions.length = state.page + 1;
      if (nextPosition) state.positions.push(nextPosition);
      prev.disabled = state.page === 0;
      next.disabled = !nextPosition;
      pageLabel.textContent = "page " + (state.page + 1) + " · " + rows.length + " shown";
      clear(results);
      if (rows.length === 0) {
        // A full page before may still have had nothing after it (positions are row ids).
        results.appendChild(el("p", { class: "muted", id: "no-results" },
          state.page > 0 ? "No older transactions." : "No transactions match."));
        return;
      }
      results.appendChild(table(
        ["Gid", "Mode", "Status", "Created", "Updated", "Finished", "Next retry", "Owner", "Rollback reason"],
        rows.map((tx) => el("tr", { class: "tx-row", "data-gid": tx.gid },
          el("td", null, txLink(tx.gid)),
          el("td", null, tx.trans_type || ""),
          el("td", null, badge(tx.status)),
          el("td", { class: "time" }, formatTime(tx.create_time)),
          el("td", { class: "time" }, formatTime(tx.update_time)),
          el("td", { class: "time" }, formatTime(tx.finish_time)),
          el("td", { class: "time" }, formatTime(tx.next_cron_time)),
          el("td", null, tx.owner || ""),
          el("td", { class: "reason" }, tx.rollback_reason || ""))),
        { id: "tx-table", class: "data" }));
    }

    prev.addEventListener("click", () => {
      if (state.page > 0) {
        state.page -= 1;
        load();
      }
    });
    next.addEventListener("click", () => {
      if (state.positions.length > state.page + 1) {
        state.page += 1;
        load();
      }
    });
    autoRefresh.addEventListener("change", () => {
      if (refreshTimer) clearInterval(refreshTimer);
      refreshTimer = autoRefresh.checked ? setInterval(() => { if (gen === generation) load(); }, 5000) : null;
    });

    show(el("h1", null, "Transactions"), form,
      el("div", { class: "pager" }, prev, next, pageLabel, el("span", { class: "spacer" }),
        el("label", null, autoRefresh, " auto-refresh every 5 s")),
      results);
    load();
  }

  // ---- Transaction page -----------------------------------------------------------------

  async function renderTransaction(gid, gen) {
    show(el("h1", null, "Transaction ", el("span", { class: "gid", id: "tx-gid" }, gid)), el("p", { class: "muted" }, "Loading…"));
    let body;
    try {
      body = await api("GET", API + "/" + encodeURIComponent(gid));
    } catch (error) {
      if (gen !== generation) return;
      const message = error instanceof APIError && error.status === 404 ? "No transaction with this gid." : null;
      show(el("h1", null, "Transaction ", el("span", { class: "gid", id: "tx-gid" }, gid)),
        message ? el("p", { class: "error", id: "not-found" }, message) : errorBox(error),
        el("p", null, el("a", { href: "#/" }, "← All transactions")));
      return;
    }
    if (gen !== generation) return;
    const tx = body.transaction || {};
    const branches = body.branches || [];
    const attempts = body.attempts || [];
    const pending = body.pending || null;

    const actionResult = el("pre", { id: "action-result", class: "action-result", hidden: true });
    const finished = tx.status === "succeed" || tx.status === "failed";
    const actions = el("div", { class: "actions" },
      el("button", { type: "button", id: "force-stop", class: "danger", disabled: finished,
        onclick: () => act(gid, "force-stop", actionResult,
          "Force stop " + gid + "? It is marked failed and no more branches are called (compensations are not run).") },
        "Force stop"),
      el("button", { type: "button", id: "retry-now", disabled: finished,
        onclick: () => act(gid, "retry-now", actionResult, null) }, "Retry now"),
      el("button", { type: "button", id: "refresh", onclick: () => route() }, "Refresh"),
      actionResult);

    show(
      el("p", null, el("a", { href: "#/" }, "← All transactions")),
      el("h1", null, "Transaction ", el("span", { class: "gid", id: "tx-gid" }, gid), " ", badge(tx.status)),
      actions,
      pendingBox(tx, pending),
      el("section", { id: "summary" }, el("h2", null, "Transaction"), fields([
        ["mode", tx.trans_type], ["status", tx.status], ["created", formatTime(tx.create_time)],
        ["updated", formatTime(tx.update_time)], ["finished", formatTime(tx.finish_time)],
        ["next retry", formatTime(tx.next_cron_time)], ["owner", tx.owner], ["rollback reason", tx.rollback_reason],
        ["retry interval (s)", tx.retry_interval], ["next retry interval (s)", tx.next_cron_interval],
        ["timeout to fail (s)", tx.timeout_to_fail], ["retry limit", tx.retry_limit], ["retries", tx.retry_count],
      ]), tx.custom_data ? [el("h3", null, "Custom data"), el("pre", { class: "custom-data" }, tx.custom_data)] : null),
      el("section", { id: "diagram" }, el("h2", null, "Calls"), sequenceDiagram(attempts)),
      el("section", { id: "branches" }, el("h2", null, "Branches (" + branches.length + ")"), table(
        ["Branch", "Op", "URL", "Status", "Created", "Finished"],
        branches.map((b) => el("tr", { class: "branch-row op-" + cssToken(b.op) },
          el("td", null, b.branch_id || ""), el("td", null, b.op || ""), el("td", { class: "url" }, b.url || ""),
          el("td", null, badge(b.status)), el("td", null, formatTime(b.create_time)), el("td", null, formatTime(b.finish_time)))),
        { id: "branch-table", class: "data" })),
      el("section", { id: "attempts" }, el("h2", null, "Attempts (" + attempts.length + ")"), table(
        ["#", "Started", "Branch", "Op", "URL", "Result", "Duration", "Error", "Coordinator"],
        attempts.map((a, i) => el("tr", { class: "attempt-row result-" + cssToken(a.result) + " op-" + cssToken(a.op) },
          el("td", null, String(i + 1)), el("td", { class: "time" }, formatTime(a.start_time)), el("td", null, a.branch_id || ""),
          el("td", null, a.op || ""), el("td", { class: "url" }, a.url || ""), el("td", null, badge(a.result)),
          el("td", { class: "num" }, a.duration_ms === undefined || a.duration_ms === null ? "—" : a.duration_ms + " ms"),
          el("td", { class: "error-text" }, a.error || ""), el("td", null, a.owner || ""))),
        { id: "attempt-table", class: "data" })));
  }

  /** "Why is this not finished": the API's explanation of what the coordinator waits for. */
  function pendingBox(tx, pending) {
    if (!pending) {
      const done = tx.status === "succeed" || tx.status === "failed";
      return el("section", { id: "pending", class: "pending done" },
        el("h2", null, done ? "Finished" : "Why is this not finished?"),
        el("p", null, done ? "This transaction is " + tx.status + "; nothing more will be called."
          : "Nothing is pending right now."));
    }
    return el("section", { id: "pending", class: "pending" },
      el("h2", null, "Why is this not finished?"),
      el("p", { class: "explanation", id: "pending-explanation" }, pending.explanation || ""),
      fields([
        ["next retry", formatTime(pending.next_retry_time)],
        ["last error", el("span", { class: "error-text", id: "pending-last-error" }, pending.last_error || "—")],
        ["retry count", pending.retry_count],
        ["lease owner", pending.lease_owner],
        ["lease until", formatTime(pending.lease_until)],
      ]));
  }

  async function act(gid, action, output, confirmText) {
    if (confirmText && !window.confirm(confirmText)) return;
    output.hidden = false;
    output.className = "action-result";
    output.textContent = action + "…";
    let body;
    try {
      body = await api("POST", API + "/" + encodeURIComponent(gid) + "/" + action);
    } catch (error) {
      output.textContent = action + " failed: " + (error && error.message ? error.message : String(error));
      output.classList.add("failed");
      return;
    }
    // The answer comes once the change is stored: show the new state with the answer on it.
    await refreshShowing(action + ": " + JSON.stringify(body), "ok");
  }

  async function refreshShowing(text, kind) {
    const { path } = parseHash();
    if (!path.startsWith("/tx/")) return;
    generation += 1;
    await renderTransaction(decodeURIComponent(path.slice(4)), generation);
    const fresh = document.getElementById("action-result");
    if (fresh) {
      fresh.hidden = false;
      fresh.textContent = text;
      fresh.className = "action-result " + kind;
    }
  }

  // ---- Sequence diagram -----------------------------------------------------------------

  /** The service a branch URL belongs to: scheme + host:port for HTTP, host:port for gRPC. */
  function serviceOf(url) {
    const text = String(url || "");
    const match = /^([a-z][a-z0-9+.-]*:\/\/)?([^/?#]*)/i.exec(text);
    if (!match || !match[2]) return text || "(no url)";
    return (match[1] || "") + match[2];
  }

  /** Coordinator ↔ services: one lifeline per service, one arrow per attempt in time order. */
  function sequenceDiagram(attempts) {
    if (attempts.length === 0) {
      return el("p", { class: "muted", id: "no-attempts" }, "No branch has been called yet.");
    }
    const ordered = attempts.slice().sort((a, b) => (Date.parse(a.start_time) || 0) - (Date.parse(b.start_time) || 0));
    const services = [];
    for (const a of ordered) {
      const service = serviceOf(a.url);
      if (!services.includes(service)) services.push(service);
    }
    const gutter = 90, column = 260, top = 56, row = 46, pad = 20;
    const lifelineX = (i) => gutter + column / 2 + i * column;
    const width = gutter + column * (services.length + 1);
    const height = top + row * ordered.length + pad;
    const start = Date.parse(ordered[0].start_time) || 0;

    const lifelines = ["coordinator"].concat(services).map((name, i) => {
      const x = lifelineX(i);
      return svg("g", { class: i === 0 ? "lifeline coordinator" : "lifeline service", "data-name": name },
        svg("title", null, name),
        svg("rect", { x: x - column / 2 + 10, y: 8, width: column - 20, height: 30, rx: 4 }),
        svg("text", { x, y: 28, "text-anchor": "middle", class: "lifeline-label" }, shorten(name, 34)),
        svg("line", { x1: x, y1: 38, x2: x, y2: height - 6, class: "lifeline-line" }));
    });

    const markers = svg("defs", null, ["success", "failure", "ongoing", "error", "other"].map((kind) =>
      svg("marker", { id: "arrow-" + kind, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", class: "head result-" + kind }))));

    const arrows = ordered.map((a, i) => {
      const y = top + i * row + row / 2 + 6;
      const x1 = lifelineX(0), x2 = lifelineX(services.indexOf(serviceOf(a.url)) + 1);
      const result = ["success", "failure", "ongoing", "error"].includes(a.result) ? a.result : "other";
      const compensating = COMPENSATING_OPS.has(a.op);
      const offset = (Date.parse(a.start_time) || start) - start;
      const label = (a.op || "?") + " " + (a.branch_id || "") + " → " + (a.result || "?") +
        (a.duration_ms !== undefined && a.duration_ms !== null ? " (" + a.duration_ms + " ms)" : "");
      return svg("g", {
        class: "attempt result-" + result + (compensating ? " compensation" : ""),
        "data-op": a.op || "", "data-branch": a.branch_id || "", "data-result": a.result || "",
      },
      svg("title", null, label + "\n" + (a.url || "") + (a.error ? "\n" + a.error : "")),
      svg("text", { x: 8, y: y + 4, class: "offset" }, "+" + offset + " ms"),
      svg("line", { x1: x1 + 4, y1: y, x2: x2 - 4, y2: y, class: "arrow", "marker-end": "url(#arrow-" + result + ")" }),
      svg("text", { x: (x1 + x2) / 2, y: y - 7, "text-anchor": "middle", class: "arrow-label" }, shorten(label, 60)));
    });

    const legend = el("p", { class: "legend muted" },
      el("span", { class: "key result-success" }, "success"), " ",
      el("span", { class: "key result-failure" }, "failure"), " ",
      el("span", { class: "key result-ongoing" }, "ongoing"), " ",
      el("span", { class: "key result-error" }, "error"), " · dashed: compensation / cancel / rollback");
    return el("div", { class: "diagram-wrap" },
      svg("svg", { id: "sequence", class: "sequence", width, height, viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": "sequence diagram of branch calls" },
        markers, lifelines, arrows),
      legend);
  }

  function shorten(text, max) {
    const value = String(text);
    return value.length > max ? value.slice(0, max - 1) + "…" : value;
  }

  // ---- Start ----------------------------------------------------------------------------

  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", () => {
    setUpToken();
    route();
  });
})();
