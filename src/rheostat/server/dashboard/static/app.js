// The Rheostat dashboard: hash-routed pages over /api/v1, kept live by the /api/v1/stream event source.
// Everything is built with DOM calls and textContent: nothing from the API is ever parsed as HTML.
"use strict";
(function () {
  const TOKEN_KEY = "rheostat-token";
  const main = document.getElementById("main");
  const conn = document.getElementById("conn");
  const banner = document.getElementById("banner");
  const state = { canaries: new Map(), lastEventId: null, page: null, stream: null, down: false };

  // -- DOM helpers ------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }
  const badge = (word) => h("span", { class: `badge ${word}` }, word);
  const short = (rev) => (rev || "").replace(/^([\w.-]+[@:/])?(sha1:)?/, "").slice(0, 12) || "–";
  function ago(ts) {
    if (!ts) return "";
    const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    return `${Math.floor(s / 3600)}h ago`;
  }
  const time = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "");
  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "muted" }, empty || "None.");
    return h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c)))))));
  }

  // Replace a live region, keeping keyboard focus on the "same" element (by data-focus) if it had it.
  function replace(container, ...children) {
    const focused = document.activeElement && container.contains(document.activeElement)
      ? document.activeElement.getAttribute("data-focus") : null;
    container.replaceChildren(...children);
    if (focused) {
      const again = container.querySelector(`[data-focus="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
  }

  // -- API --------------------------------------------------------------------------------------------
  async function get(path) {
    const r = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (r.status === 404) return null;
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  const dialog = document.getElementById("token-dialog");
  const tokenInput = document.getElementById("token-input");
  const tokenError = document.getElementById("token-error");
  function askToken(message) {
    return new Promise((resolve) => {
      tokenError.textContent = message || "";
      tokenInput.value = "";
      const form = document.getElementById("token-form");
      const done = (value) => {
        form.removeEventListener("submit", onSubmit);
        document.getElementById("token-cancel").removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        if (dialog.open) dialog.close();
        resolve(value);
      };
      const onSubmit = (e) => { e.preventDefault(); done(tokenInput.value.trim() || null); };
      const onCancel = (e) => { e.preventDefault(); done(null); };
      form.addEventListener("submit", onSubmit);
      document.getElementById("token-cancel").addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onCancel);
      dialog.showModal();
      tokenInput.focus();
    });
  }

  // POST an action with the token, asked once per tab; a refused token is forgotten and asked again.
  async function act(path) {
    let message = "";
    for (;;) {
      let token = sessionStorage.getItem(TOKEN_KEY);
      if (!token) {
        token = await askToken(message);
        if (!token) return { ok: false, text: "cancelled" };
        sessionStorage.setItem(TOKEN_KEY, token);
      }
      const r = await fetch(path, { method: "POST", headers: { Authorization: `Bearer ${token}` } });
      let body = {};
      try { body = await r.json(); } catch (_) { /* not JSON */ }
      if (r.status === 401 || r.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        message = body.error || "the token was refused";
        continue;
      }
      return { ok: r.ok, text: r.ok ? "requested" : body.error || `HTTP ${r.status}` };
    }
  }

  // -- pages ------------------------------------------------------------------------------------------
  function page(title, ...children) {
    document.title = `${title} · Rheostat`;
    return [h("h1", {}, title), ...children];
  }

  const overview = {
    async build() {
      this.live = h("div", {});
      return page("Applications", this.live);
    },
    async update() {
      const [apps, source] = await Promise.all([get("/api/v1/applications"), get("/api/v1/source")]);
      const rows = (apps ? apps.items : []).map((a) => [
        h("td", {}, h("strong", {}, a.key)),
        h("td", {}, badge(a.health)),
        h("td", {}, a.canaries.length ? a.canaries.map((c) => h("div", {},
          h("a", { href: `#/canary/${c.key}`, "data-focus": `canary:${c.key}` }, c.key), " ", badge(c.phase))) : h("span", { class: "muted" }, "no canary")),
        h("td", { class: "num" }, a.canaries.map((c) => h("div", { "data-weight": c.key }, `${c.primaryWeight} / ${c.canaryWeight}`))),
        h("td", { class: "num" }, a.replicas || "–"),
        h("td", { class: "mono", title: a.source.revision }, a.source.owner ? `${a.source.owner} @ ${short(a.source.revision)}` : "–"),
        h("td", {}, a.lastEvent ? h("span", { class: a.lastEvent.type }, `${a.lastEvent.reason}: `) : "",
          a.lastEvent ? `${a.lastEvent.message} ` : "–", a.lastEvent ? h("span", { class: "muted" }, ago(a.lastEvent.ts)) : ""),
      ]);
      const src = source ? h("p", {}, "Repository ", h("span", { class: "mono" }, source.repo), ", applied ",
        h("span", { class: "mono" }, short(source.appliedRevision)),
        source.error ? h("span", { class: "error" }, ` — revision ${short(source.rejectedRevision)} rejected: ${source.error}`) : "") : "";
      replace(this.live, src, table(
        ["Application", "Health", "Canaries", "Weight primary / canary", "Ready replicas", "Source commit", "Last event"],
        rows, "No applications yet."));
    },
  };

  const canary = {
    async build(ns, name) {
      this.key = `${ns}/${name}`;
      this.status = h("p", { role: "status", "aria-live": "polite", class: "muted" });
      this.actions = h("div", { class: "buttons" });
      this.live = h("div", {});
      return page(`Canary ${this.key}`, this.actions, this.status, this.live);
    },
    button(label, action, cls) {
      return h("button", { type: "button", class: cls || "", "data-action": action, "data-focus": `action:${action}`,
        onclick: async (e) => {
          const b = e.currentTarget;
          b.disabled = true;
          try {
            const r = await act(`/api/v1/canaries/${this.key}/${action}`);
            this.status.textContent = `${label}: ${r.text}`;
            this.status.className = r.ok ? "muted" : "error";
          } catch (err) {
            this.status.textContent = `${label}: ${err.message}`;
            this.status.className = "error";
          } finally {
            b.disabled = false;
            schedule();
          }
        } }, label);
    },
    async update() {
      const c = await get(`/api/v1/canaries/${this.key}`);
      if (!c) { replace(this.live, h("p", { class: "error" }, `Canary ${this.key} not found.`)); return; }
      const [hist, ev] = await Promise.all([
        get(`/api/v1/canaries/${this.key}/history?limit=500`),
        get(`/api/v1/events?kind=Canary&key=${encodeURIComponent(this.key)}&limit=30`),
      ]);
      const st = c.status;
      const rows = hist ? hist.items : [];
      const paused = !!(st.manual && st.manual.paused);
      replace(this.actions, this.button("Approve", "approve", "primary"), this.button("Roll back", "abort", "danger"),
        paused ? this.button("Resume", "resume") : this.button("Pause", "pause"));
      const stats = h("dl", { class: "stats" },
        [["Phase", badge(st.phase), "phase"], ["Canary weight", `${st.canaryWeight}%`, "canary-weight"],
          ["Primary weight", `${st.primaryWeight}%`, "primary-weight"],
          ["Failed checks", `${st.failedChecks} / ${(c.spec.analysis || {}).threshold ?? "–"}`, "failed-checks"],
          ["Iterations", String(st.iterations), "iterations"], ["Strategy", c.strategy, "strategy"],
          ["Manual", Object.keys(st.manual || {}).join(", ") || "–", "manual"]]
          .map(([k, v, id]) => h("div", {}, h("dt", {}, k), h("dd", { "data-stat": id }, v))));
      const weights = RheoChart.line({
        title: "Traffic weight (%) over time", unit: "%", yMin: 0, yMax: 100, step: true,
        series: [
          { label: "primary", cls: "c0", points: rows.map((r) => [r.ts, r.primaryWeight]) },
          { label: "canary", cls: "c1", points: rows.map((r) => [r.ts, r.canaryWeight]) },
        ],
      });
      const metricNames = [...new Set(rows.flatMap((r) => (r.metrics || []).map((m) => m.name)))];
      const metricCards = metricNames.map((n) => {
        const of = (r) => (r.metrics || []).find((m) => m.name === n);
        const last = [...rows].reverse().map(of).find(Boolean) || {};
        const series = [{ label: "canary", cls: "c1", points: rows.map((r) => [r.ts, of(r) ? of(r).value : null]) }];
        if (rows.some((r) => of(r) && typeof of(r).primaryValue === "number"))
          series.unshift({ label: "primary", cls: "c0", points: rows.map((r) => [r.ts, of(r) ? of(r).primaryValue : null]) });
        const thresholds = [{ label: "min", value: last.min }, { label: "max", value: last.max }];
        return h("section", { class: "card", "aria-label": `metric ${n}` }, h("h2", {}, n),
          RheoChart.line({ title: `${n} over time`, series, thresholds }),
          legend(series, true),
          h("p", { class: last.ok ? "True" : "False" }, last.value === null || last.value === undefined
            ? `no value: ${last.message || "no data"}` : `newest ${+Number(last.value).toFixed(3)} — ${last.ok ? "within" : "outside"} threshold`));
      });
      const phases = [];
      for (const r of rows) if (!phases.length || phases[phases.length - 1].phase !== r.phase) phases.push(r);
      replace(this.live,
        h("p", {}, st.message || ""), stats,
        h("div", { class: "row" },
          h("section", { class: "card", "aria-label": "weights" }, h("h2", {}, "Weights"), weights,
            legend([{ label: "primary", cls: "c0" }, { label: "canary", cls: "c1" }], false)),
          ...metricCards),
        h("div", { class: "row" },
          h("section", { class: "card" }, h("h2", {}, "Phase timeline"),
            phases.length ? h("ol", { class: "timeline" }, phases.map((r) => h("li", {}, h("span", { class: "muted" }, time(r.ts)), " ", badge(r.phase), " ", r.message || ""))) : h("p", { class: "muted" }, "No history yet.")),
          h("section", { class: "card" }, h("h2", {}, "Events"),
            h("ol", { class: "timeline" }, (ev ? ev.items : []).slice().reverse().map((e) => h("li", { class: `ev-${e.type}` },
              h("span", { class: "muted" }, time(e.ts)), " ", h("strong", { class: e.type }, e.reason), " ", e.message))))));
    },
  };
  function legend(series, threshold) {
    return h("div", { class: "legend" }, series.map((s) => h("span", {}, h("span", { class: `swatch ${s.cls}` }), s.label)),
      threshold ? h("span", {}, h("span", { class: "swatch cT" }), "threshold") : "");
  }

  const violations = {
    async build() { this.live = h("div", {}); return page("Policy violations", this.live); },
    async update() {
      const v = await get("/api/v1/violations");
      if (!v) { replace(this.live, h("p", { class: "muted" }, "None: this controller has no policy gate.")); return; }
      replace(this.live, table(["Policy", "Action", "Object", "Commit", "File", "Message", "Found by"],
        v.items.map((f) => [f.policy, h("td", {}, h("span", { class: `badge ${f.kind === "error" ? "Failed" : f.action === "deny" ? "Degraded" : "Waiting"}` }, f.kind === "error" ? `error (${f.action})` : f.action)),
          h("td", { class: "mono" }, f.object), h("td", { class: "mono" }, short(f.commit)), h("td", { class: "mono" }, f.file || "–"),
          f.message, f.found_by || ""]), "None."));
    },
  };

  const flags = {
    async build() { this.live = h("div", {}); return page("Flags", this.live); },
    async update() {
      const f = await get("/api/v1/flags");
      if (!f) { replace(this.live, h("p", { class: "muted" }, "None: this controller serves no feature flags.")); return; }
      replace(this.live, table(["Flag", "State", "Default", "Variants", "Current split", "Revision", "Drift"], f.items.map((x) => {
        const r = x.rollout;
        const split = r && r.active
          ? `${r.share}% get Git's definition, ${100 - r.share}% the primary (${r.primaryDefaultVariant || "–"})`
          : "all users: Git's definition";
        const state = x.killSwitch ? "DISABLED (kill switch)" : x.state;
        return [h("td", { class: "mono" }, x.key),
          h("td", {}, h("span", { class: `badge ${x.killSwitch ? "Failed" : x.state === "ENABLED" ? "Succeeded" : "Waiting"}` }, state)),
          h("td", { class: "mono" }, x.defaultVariant || "–"), h("td", { class: "mono" }, x.variants.join(", ")),
          h("td", {}, split, r && r.canary ? [" · ", h("a", { href: `#/canary/${r.canary}` }, r.canary)] : ""),
          h("td", { class: "mono" }, short(x.revision)), x.drift || ""];
      }), "None."));
    },
  };

  const events = {
    filters: { kind: "", key: "", type: "", limit: "200" },
    async build() {
      const f = this.filters;
      const input = (name, label, attrs) => h("div", {}, h("label", { for: `f-${name}` }, label),
        h("input", { id: `f-${name}`, name, value: f[name], ...attrs }));
      const form = h("form", { class: "filters", role: "search", onsubmit: (e) => {
        e.preventDefault();
        const data = new FormData(form);
        for (const k of Object.keys(f)) f[k] = String(data.get(k) || "");
        schedule();
      } },
      h("div", {}, h("label", { for: "f-kind" }, "Kind"), h("select", { id: "f-kind", name: "kind" },
        ["", "Canary", "Workload", "Kustomization", "GitRepository", "Receiver", "Router", "Source"].map((k) =>
          h("option", { value: k, selected: k === f.kind }, k || "any")))),
      input("key", "Object (namespace/name)", { placeholder: "e.g. default/web" }),
      h("div", {}, h("label", { for: "f-type" }, "Type"), h("select", { id: "f-type", name: "type" },
        ["", "Normal", "Warning"].map((k) => h("option", { value: k, selected: k === f.type }, k || "any")))),
      input("limit", "Newest", { type: "number", min: "1", max: "5000" }),
      h("button", { type: "submit" }, "Filter"));
      this.live = h("div", {});
      return page("Events", form, this.live);
    },
    async update() {
      const f = this.filters;
      const q = new URLSearchParams({ limit: f.limit || "200" });
      if (f.kind) q.set("kind", f.kind);
      if (f.key) q.set("key", f.key);
      const ev = await get(`/api/v1/events?${q}`);
      const items = (ev ? ev.items : []).filter((e) => !f.type || e.type === f.type).reverse();
      replace(this.live, table(["Time", "Type", "Kind", "Object", "Reason", "Message"], items.map((e) => [
        h("td", { title: new Date(e.ts * 1000).toISOString() }, time(e.ts)), h("td", { class: e.type }, e.type), e.kind,
        e.kind === "Canary" ? h("a", { href: `#/canary/${e.key}` }, e.key) : h("span", { class: "mono" }, e.key), e.reason, e.message,
      ]), "No events match."));
    },
  };

  const gitops = {
    async build() { this.live = h("div", {}); return page("GitOps", this.live); },
    async update() {
      const [src, ks] = await Promise.all([get("/api/v1/sources"), get("/api/v1/kustomizations")]);
      const key = (o) => `${o.metadata.namespace}/${o.metadata.name}`;
      const conds = (s) => h("ul", {}, (s.conditions || []).map((c) => h("li", {}, h("strong", { class: c.status }, `${c.type}=${c.status}`),
        ` ${c.reason || ""}${c.message ? `: ${c.message}` : ""}`)));
      const ready = (s) => { const r = (s.conditions || []).find((c) => c.type === "Ready"); return badge(r ? r.status : "Unknown"); };
      replace(this.live,
        h("h2", {}, "Sources"),
        table(["Source", "URL", "Revision", "Suspended", "Ready", "Conditions"], (src ? src.items : []).map((o) => [
          h("td", { class: "mono" }, `${o.kind} ${key(o)}`), h("td", { class: "mono" }, o.spec.url || ""),
          h("td", { class: "mono" }, short((o.status.artifact || {}).revision)), o.spec.suspend ? "yes" : "no", h("td", {}, ready(o.status)), h("td", {}, conds(o.status)),
        ]), "No sources."),
        h("h2", {}, "Kustomizations"),
        table(["Kustomization", "Source", "Path", "Applied revision", "Suspended", "Ready", "Conditions"], (ks ? ks.items : []).map((o) => [
          h("td", { class: "mono" }, key(o)), h("td", { class: "mono" }, `${o.spec.sourceRef.kind} ${o.spec.sourceRef.name}`), h("td", { class: "mono" }, o.spec.path || "./"),
          h("td", { class: "mono" }, short(o.status.lastAppliedRevision)), o.spec.suspend ? "yes" : "no", h("td", {}, ready(o.status)), h("td", {}, conds(o.status)),
        ]), "No Kustomizations."));
    },
  };

  // -- routing and live updates -----------------------------------------------------------------------
  const ROUTES = [
    [/^#?\/?$/, overview], [/^#\/canary\/([^/]+)\/([^/]+)$/, canary], [/^#\/violations$/, violations],
    [/^#\/flags$/, flags], [/^#\/events$/, events], [/^#\/gitops$/, gitops],
  ];

  async function show() {
    const hash = location.hash || "#/";
    for (const a of document.querySelectorAll("nav a")) {
      if (a.getAttribute("href") === hash) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    for (const [re, p] of ROUTES) {
      const m = hash.match(re);
      if (!m) continue;
      state.page = p;
      main.replaceChildren(...(await p.build(...m.slice(1).map(decodeURIComponent))));
      await refresh();
      return;
    }
    state.page = null;
    main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
  }

  async function refresh() {
    if (!state.page) return;
    try {
      await state.page.update();
      if (!state.down) banner.hidden = true;
    } catch (err) {
      banner.textContent = `Could not load this page (${err.message}). The controller may be restarting; retrying by itself…`;
      banner.hidden = false;
    }
  }

  let timer = null;
  function schedule() {
    if (timer) return;
    timer = setTimeout(() => { timer = null; refresh(); }, 150);
  }

  function connect() {
    const url = state.lastEventId === null ? "/api/v1/stream" : `/api/v1/stream?after=${state.lastEventId}`;
    const es = new EventSource(url);
    state.stream = es;
    es.addEventListener("hello", (e) => {
      const wasDown = state.down;
      state.down = false;
      conn.textContent = "live";
      conn.className = "conn live";
      banner.hidden = true;
      if (state.lastEventId === null) state.lastEventId = JSON.parse(e.data).after;
      if (wasDown) schedule();
    });
    es.addEventListener("event", (e) => {
      state.lastEventId = Number(e.lastEventId);
      schedule();
    });
    es.addEventListener("canaries", (e) => {
      state.canaries = new Map(JSON.parse(e.data).items.map((c) => [c.key, c]));
      schedule();
    });
    es.onerror = () => {
      state.down = true;
      conn.textContent = "reconnecting…";
      conn.className = "conn down";
      banner.textContent = "The controller is not answering (restarting?). Reconnecting by itself…";
      banner.hidden = false;
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
  }

  window.addEventListener("hashchange", () => { show().then(() => main.focus()); });
  connect();
  show();
})();
