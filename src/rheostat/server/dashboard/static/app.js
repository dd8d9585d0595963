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
  const badge = (word) => h("span", { class: `badge ${word.replace(/\s+/g, "-")}` }, word);
  const short = (rev) => (rev || "").replace(/^([\w.-]+[@:/])?(sha1:)?/, "").slice(0, 12) || "–";
  function ago(ts) {
    if (!ts) return "";
    const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    return `${Math.floor(s / 3600)}h ago`;
  }
  // One time format everywhere, the charts' included (RheoTime, chart.js): 24-hour local time.
  const time = (ts) => RheoTime.clock(ts);
  const stamp = (ts) => RheoTime.stamp(ts);
  const when = (ts) => h("time", { datetime: ts ? new Date(ts * 1000).toISOString() : "", title: ts ? new Date(ts * 1000).toISOString() : "" }, stamp(ts));
  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }
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

  // -- what is served: the split, an A/B rule, a mirror, a blue/green switch ----------------------------
  function stringMatch(m) {
    if (!m) return "";
    if (m.exact !== undefined) return `= "${m.exact}"`;
    if (m.prefix !== undefined) return `starts with "${m.prefix}"`;
    if (m.suffix !== undefined) return `ends with "${m.suffix}"`;
    if (m.regex !== undefined) return `matches /${m.regex}/`;
    return "";
  }
  function matchRule(match) {
    return (match || []).map((m) => [
      ...Object.entries(m.headers || {}).map(([k, v]) => `header ${k} ${stringMatch(v)}`),
      ...Object.entries(m.queryParams || {}).map(([k, v]) => `query ${k} ${stringMatch(v)}`),
      ...Object.entries(m.sourceLabels || {}).map(([k, v]) => `source label ${k}=${v}`),
    ].join(" and ")).join(", or ");
  }
  // The bar of what users get now. `r`: primaryWeight, canaryWeight, mirror, mirrorWeight, match, switched.
  function splitBar(r, big) {
    const rule = matchRule(r.match);
    const seg = (cls, width, label) => h("span", { class: `seg ${cls}`, style: null, "data-width": width }, label);
    let parts;
    let words;
    if (rule) {
      words = `A/B: requests with ${rule} go to the canary; everyone else to the primary`;
      parts = [seg("p", 70, "primary: everyone else"), seg("c", 30, `canary: ${rule}`)];
    } else {
      words = `primary ${r.primaryWeight}% · canary ${r.canaryWeight}%`;
      if (r.switched) words = `blue/green: switched, all traffic on the canary (green)`;
      parts = [seg("p", r.primaryWeight, r.primaryWeight ? `primary ${r.primaryWeight}%` : ""),
        seg("c", r.canaryWeight, r.canaryWeight ? `canary ${r.canaryWeight}%` : "")];
    }
    if (r.mirror) words += ` · mirroring ${r.mirrorWeight}% of requests to the canary (its answers are dropped)`;
    const bar = h("div", { class: `split${big ? " big" : ""}`, role: "img", "aria-label": words, "data-split": words }, parts);
    for (const s of bar.querySelectorAll(".seg")) s.style.flexGrow = s.getAttribute("data-width");
    return h("div", { class: "split-wrap" }, bar, h("div", { class: big ? "split-words" : "split-words small muted" }, words));
  }
  const release = (info) => {
    if (!info) return h("span", { class: "muted" }, "–");
    const v = info.version || (info.revision ? `template ${info.revision.slice(0, 10)}` : "–");
    return h("span", { class: "release" }, h("strong", {}, v),
      info.commit ? [" ", h("span", { class: "mono", title: info.commit }, short(info.commit))] : "",
      info.author ? [" by ", info.author] : "",
      info.message ? [" — ", h("em", {}, info.message)] : "");
  };
  const versionOf = (info) => (info && (info.version || (info.revision ? info.revision.slice(0, 10) : ""))) || "the primary";

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

  // Every action is confirmed first, in words that say what will happen.
  const confirmDialog = document.getElementById("confirm-dialog");
  function confirmAction(title, text, okLabel, danger) {
    return new Promise((resolve) => {
      document.getElementById("confirm-title").textContent = title;
      document.getElementById("confirm-text").textContent = text;
      const ok = document.getElementById("confirm-ok");
      const cancel = document.getElementById("confirm-cancel");
      ok.textContent = okLabel;
      ok.className = danger ? "danger" : "primary";
      const done = (value) => {
        ok.removeEventListener("click", onOk);
        cancel.removeEventListener("click", onCancel);
        confirmDialog.removeEventListener("cancel", onCancel);
        if (confirmDialog.open) confirmDialog.close();
        resolve(value);
      };
      const onOk = (e) => { e.preventDefault(); done(true); };
      const onCancel = (e) => { e.preventDefault(); done(false); };
      ok.addEventListener("click", onOk);
      cancel.addEventListener("click", onCancel);
      confirmDialog.addEventListener("cancel", onCancel);
      confirmDialog.showModal();
      ok.focus();
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

  // A button that confirms `what` ({title, text, ok, danger}), then POSTs `path`, reporting into `status`.
  function actionButton(label, path, what, status, attrs) {
    return h("button", { type: "button", class: (attrs && attrs.cls) || "", "data-action": (attrs && attrs.action) || label,
      "data-focus": `action:${path}`,
      onclick: async (e) => {
        const b = e.currentTarget;
        if (!(await confirmAction(what.title, what.text, what.ok || label, what.danger))) {
          status.textContent = `${label}: not done`;
          status.className = "muted";
          return;
        }
        b.disabled = true;
        try {
          const r = await act(path);
          status.textContent = `${label}: ${r.text}`;
          status.className = r.ok ? "muted" : "error";
        } catch (err) {
          status.textContent = `${label}: ${err.message}`;
          status.className = "error";
        } finally {
          b.disabled = false;
          schedule();
        }
      } }, label);
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
          h("a", { href: `#/canary/${c.key}`, "data-focus": `canary:${c.key}` }, c.key), " ", badge(c.phase), " ",
          h("span", { class: "muted small" }, c.strategy),
          h("div", { class: "small", "data-versions": c.key }, "primary ", h("strong", {}, c.primaryVersion || "–"),
            c.canaryVersion ? [" · canary ", h("strong", {}, c.canaryVersion)] : ""))) : h("span", { class: "muted" }, "no canary")),
        h("td", { class: "num traffic" }, a.canaries.map((c) => h("div", { "data-weight": c.key }, splitBar(c, false)))),
        h("td", { class: "num" }, a.replicas || "–"),
        h("td", { class: "mono", title: a.source.revision }, a.source.owner ? `${a.source.owner} @ ${short(a.source.revision)}` : "–"),
        h("td", {}, a.lastEvent ? h("span", { class: a.lastEvent.type }, `${a.lastEvent.reason}: `) : "",
          a.lastEvent ? `${a.lastEvent.message} ` : "–", a.lastEvent ? h("span", { class: "muted" }, ago(a.lastEvent.ts)) : ""),
      ]);
      const src = source ? h("p", {}, "Repository ", h("span", { class: "mono" }, source.repo), ", applied ",
        h("span", { class: "mono" }, short(source.appliedRevision)),
        source.error ? h("span", { class: "error" }, ` — revision ${short(source.rejectedRevision)} rejected: ${source.error}`) : "") : "";
      replace(this.live, src, table(
        ["Application", "Health (what users get)", "Canaries", "Traffic now", "Ready replicas", "Source commit", "Last event"],
        rows, "No applications yet."));
    },
  };

  // -- the canary page: what is live now, the selected run's story, the release history ---------------
  const OUTCOME_CLASS = { promoted: "Succeeded", "rolled back": "Failed", aborted: "Failed", failed: "Failed",
    running: "Progressing", cancelled: "Unknown", superseded: "Unknown" };
  const outcomeBadge = (o) => h("span", { class: `badge ${OUTCOME_CLASS[o] || "Unknown"}`, "data-outcome": o }, o);
  function outcomeWords(r) {
    if (r.outcome === "running") return "";
    if (r.outcome === "aborted") return `rolled back ${r.by || "by hand"} at ${time(r.byTs)}`;
    if (r.outcome === "promoted" && r.by) return `promoted ${r.by} at ${time(r.byTs)}`;
    return r.reason || "";
  }
  // A metric in percent (a success rate) is drawn on 0 to 100; a duration in ms from 0.
  function metricScale(name, values) {
    const max = Math.max(0, ...values.filter((v) => typeof v === "number"));
    if (/success-rate|percent|pct|availability/.test(name) || (/rate/.test(name) && max > 1 && max <= 100))
      return { yMin: 0, yMax: 100, unit: "%" };
    if (/duration|latency/.test(name)) return { yMin: 0, unit: " ms" };
    return { yMin: 0 };
  }

  const canary = {
    async build(ns, name, run) {
      this.key = `${ns}/${name}`;
      this.name = name;
      this.run = run ? Number(run) : null;
      this.status = h("p", { role: "status", "aria-live": "polite", class: "muted" });
      this.actions = h("div", { class: "buttons", "aria-label": "actions" });
      this.live = h("div", {});
      return page(`Canary ${this.key}`, this.actions, this.status, this.live);
    },
    confirmations(c, live) {
      const name = this.name;
      const primaryV = versionOf(live.primary);
      const canaryV = versionOf(live.canary) === "the primary" ? "the new revision" : versionOf(live.canary);
      const st = c.status;
      const gateWords = st.phase === "Waiting" ? `the run of ${canaryV} starts`
        : st.phase === "WaitingPromotion" ? `${canaryV} is promoted to the primary, then gets all traffic`
          : `the canary weight goes up: ${live.next || "the next step"}`;
      return {
        approve: { title: `Approve ${name}?`, text: `Approve ${name}: open the gate it waits on; ${gateWords}.`, ok: "Approve" },
        promote: { title: `Promote ${name} now?`, text: `Promote ${canaryV} of ${name} now: the rest of the analysis is skipped, the primary takes ${canaryV}, then all traffic goes to it.`, ok: "Promote" },
        abort: { title: `Roll back ${name}?`, text: `Roll back ${name} to ${primaryV}: all traffic to the primary (${primaryV}); the canary (${canaryV}) is scaled down and this run ends as rolled back.`, ok: "Roll back", danger: true },
        halt: { title: `Halt ${name}?`, text: `Halt ${name} at canary weight ${st.canaryWeight}%: checks go on, traffic stays where it is until you unhalt.`, ok: "Halt" },
        unhalt: { title: `Unhalt ${name}?`, text: `Unhalt ${name}: the run moves on at its next step (${live.next || "as analysed"}).`, ok: "Unhalt" },
        pause: { title: `Pause ${name}?`, text: `Pause ${name}: no ticks and no checks until resumed; traffic stays at primary ${st.primaryWeight}% / canary ${st.canaryWeight}%.`, ok: "Pause" },
        resume: { title: `Resume ${name}?`, text: `Resume ${name}: ticks and checks start again.`, ok: "Resume" },
      };
    },
    // Only the actions that apply to the canary's phase (the API refuses the others with 409 anyway).
    buttons(c, live) {
      const st = c.status;
      const phase = st.phase;
      const manual = st.manual || {};
      const running = phase === "Progressing" || phase === "WaitingPromotion";
      const waitingApproval = phase === "Waiting" || phase === "WaitingPromotion"
        || (live.waitingOn || []).some((w) => w.includes("confirm-traffic-increase"));
      const what = this.confirmations(c, live);
      const b = (label, action, cls) => actionButton(label, `/api/v1/canaries/${this.key}/${action}`, what[action], this.status, { action, cls });
      return [
        waitingApproval ? b("Approve", "approve", "primary") : null,
        running ? b("Promote", "promote") : null,
        running || phase === "Waiting" ? b("Roll back", "abort", "danger") : null,
        running && !manual.halt ? b("Halt", "halt") : null,
        running && manual.halt ? b("Unhalt", "unhalt") : null,
        manual.paused ? b("Resume", "resume") : b("Pause", "pause"),
      ].filter(Boolean);
    },
    async update() {
      const c = await get(`/api/v1/canaries/${this.key}`);
      if (!c) { replace(this.live, h("p", { class: "error" }, `Canary ${this.key} not found.`)); return; }
      const out = await get(`/api/v1/canaries/${this.key}/runs?limit=100&events=${this.run || 0}`);
      const runs = out ? out.items : [];
      const live = out ? out.live : {};
      const selected = (this.run && runs.find((r) => r.id === this.run)) || runs[0] || null;
      const runEvents = (out && out.events) || [];
      const span = selected ? `since=${Math.floor(selected.start)}${selected.end ? `&until=${Math.ceil(selected.end)}` : ""}&limit=10000` : "limit=500";
      const hist = await get(`/api/v1/canaries/${this.key}/history?${span}`);
      const st = c.status;
      // `since` and `until` are whole seconds: the run's own rows start at its first tick.
      const rows = (hist ? hist.items : []).filter((r) => !selected || (r.ts >= selected.start && (!selected.end || r.ts <= selected.end)));
      replace(this.actions, ...this.buttons(c, live));

      const stats = h("dl", { class: "stats" },
        [["Phase", badge(st.phase), "phase"], ["Canary weight", `${st.canaryWeight}%`, "canary-weight"],
          ["Primary weight", `${st.primaryWeight}%`, "primary-weight"],
          ["Failed checks", `${st.failedChecks} / ${(c.spec.analysis || {}).threshold ?? "–"}`, "failed-checks"],
          ["Iterations", String(st.iterations), "iterations"], ["Strategy", c.strategy, "strategy"],
          ["Manual", Object.keys(st.manual || {}).join(", ") || "–", "manual"]]
          .map(([k, v, id]) => h("div", {}, h("dt", {}, k), h("dd", { "data-stat": id }, v))));

      const now = h("section", { class: "card now", "aria-label": "live now" }, h("h2", {}, "Live now"),
        splitBar(live, true),
        h("dl", { class: "facts" },
          h("dt", {}, "Primary"), h("dd", { "data-live": "primary" }, release(live.primary)),
          h("dt", {}, "Canary"), h("dd", { "data-live": "canary" }, live.canary ? release(live.canary) : h("span", { class: "muted" }, "none: no run in progress")),
          h("dt", {}, "Next step"), h("dd", { "data-live": "next" }, live.next
            ? [live.next, live.nextDue ? h("span", { class: "muted" }, `, due ${time(live.nextDue)} if the checks pass (every ${live.interval}s)`) : ""]
            : h("span", { class: "muted" }, st.manual && st.manual.paused ? "none: paused" : "none: at rest")),
          h("dt", {}, "Waiting on"), h("dd", { "data-live": "waiting" }, (live.waitingOn || []).length
            ? h("ul", { class: "plain" }, live.waitingOn.map((w) => h("li", {}, w))) : h("span", { class: "muted" }, "nothing"))),
        st.message ? h("p", { class: "muted" }, st.message) : "");

      const picker = h("select", { id: "run-select", "aria-label": "run", onchange: (e) => {
        location.hash = `#/canary/${this.key}/run/${e.target.value}`;
      } }, runs.map((r) => h("option", { value: r.id, selected: selected && r.id === selected.id },
        `${stamp(r.start)} · ${r.version || short(r.revision) || "revision ?"} · ${r.outcome}`)));
      const runHead = selected
        ? h("div", { class: "run-head" }, h("label", { for: "run-select" }, "Run"), picker, " ", outcomeBadge(selected.outcome), " ",
          release(selected), h("span", { class: "muted" }, ` — ${stamp(selected.start)} to ${selected.end ? time(selected.end) : "now"}, ${duration(selected.duration ?? (Date.now() / 1000 - selected.start))}`))
        : h("p", { class: "muted" }, "No run yet: the charts show the initialization.");

      const weights = RheoChart.line({
        title: "Traffic weight (%) in this run", unit: "%", yMin: 0, yMax: 100, step: true,
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
        const scale = metricScale(n, [...series.flatMap((s) => s.points.map((p) => p[1])), last.min, last.max]);
        return h("section", { class: "card", "aria-label": `metric ${n}` }, h("h2", {}, n),
          RheoChart.line({ title: `${n} in this run, canary against its threshold`, series, thresholds, ...scale }),
          legend(series, true),
          h("p", { class: last.ok ? "True" : "False" }, last.value === null || last.value === undefined
            ? `no value: ${last.message || "no data"}` : `newest ${+Number(last.value).toFixed(3)}${scale.unit || ""} — ${last.ok ? "within" : "outside"} threshold`));
      });
      const phases = [];
      for (const r of rows) if (!phases.length || phases[phases.length - 1].phase !== r.phase) phases.push(r);
      const evs = selected ? runEvents : [];
      const history = table(["Started", "Revision", "Outcome", "Why / by whom", "Ended", "Duration", ""], runs.map((r) => [
        h("td", {}, when(r.start)), h("td", {}, release(r)), h("td", {}, outcomeBadge(r.outcome)),
        h("td", {}, outcomeWords(r), r.approvedBy ? h("div", { class: "muted" }, `approved ${r.approvedBy} at ${time(r.approvedTs)}`) : ""),
        h("td", {}, r.end ? when(r.end) : "–"), h("td", { class: "num" }, duration(r.duration ?? (Date.now() / 1000 - r.start))),
        h("td", {}, h("a", { href: `#/canary/${this.key}/run/${r.id}` }, "charts"), " · ",
          h("a", { href: `#/events?kind=Canary&key=${encodeURIComponent(this.key)}&run=${r.id}` }, "events")),
      ]), "No release yet: the history starts with the first new revision.");
      replace(this.live,
        stats, now,
        h("section", { class: "card", "aria-label": "this run" }, h("h2", {}, "Run"), runHead),
        h("div", { class: "row" },
          h("section", { class: "card", "aria-label": "weights" }, h("h2", {}, "Weights"), weights,
            legend([{ label: "primary", cls: "c0" }, { label: "canary", cls: "c1" }], false)),
          ...metricCards),
        h("div", { class: "row" },
          h("section", { class: "card" }, h("h2", {}, "Phase timeline"),
            phases.length ? h("ol", { class: "timeline" }, phases.map((r) => h("li", {}, h("span", { class: "muted" }, time(r.ts)), " ", badge(r.phase), " ", r.message || ""))) : h("p", { class: "muted" }, "No history yet.")),
          h("section", { class: "card" }, h("h2", {}, "Events of this run"),
            evs.length ? h("ol", { class: "timeline" }, evs.slice().reverse().slice(0, 50).map((e) => h("li", { class: `ev-${e.type}` },
              h("span", { class: "muted" }, time(e.ts)), " ", h("strong", { class: e.type }, e.reason), " ", e.message))) : h("p", { class: "muted" }, "None."))),
        h("section", { class: "card", "aria-label": "release history" }, h("h2", {}, "Release history"), history));
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
    async build(query) {
      const f = this.filters;
      const q = new URLSearchParams(query || "");
      this.run = q.get("run") ? Number(q.get("run")) : null;
      if (q.get("kind") !== null) f.kind = q.get("kind");
      if (q.get("key") !== null) f.key = q.get("key");
      const input = (name, label, attrs) => h("div", {}, h("label", { for: `f-${name}` }, label),
        h("input", { id: `f-${name}`, name, value: f[name], ...attrs }));
      const form = h("form", { class: "filters", role: "search", onsubmit: (e) => {
        e.preventDefault();
        const data = new FormData(form);
        for (const k of Object.keys(f)) f[k] = String(data.get(k) || "");
        this.run = null;
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
      let items;
      let note = "";
      if (this.run && f.key) {  // one run's events, from the canary's release history
        const r = await get(`/api/v1/canaries/${f.key}/runs?limit=1000&events=${this.run}`);
        items = r ? r.events || [] : [];
        const run = r ? r.items.find((x) => x.id === this.run) : null;
        note = run ? `Events of the run of ${run.version || short(run.revision)} started ${stamp(run.start)} (${run.outcome}).` : "";
      } else {
        const q = new URLSearchParams({ limit: f.limit || "200" });
        if (f.kind) q.set("kind", f.kind);
        if (f.key) q.set("key", f.key);
        const ev = await get(`/api/v1/events?${q}`);
        items = ev ? ev.items : [];
      }
      items = items.filter((e) => !f.type || e.type === f.type).reverse();
      replace(this.live, note ? h("p", { "data-run-note": "" }, note) : "", table(["Time", "Type", "Kind", "Object", "Reason", "Message"], items.map((e) => [
        h("td", {}, when(e.ts)), h("td", { class: e.type }, e.type), e.kind,
        e.kind === "Canary" ? h("a", { href: `#/canary/${e.key}` }, e.key) : h("span", { class: "mono" }, e.key), e.reason, e.message,
      ]), "No events match."));
    },
  };

  const gitops = {
    async build() {
      this.status = h("p", { role: "status", "aria-live": "polite", class: "muted" });
      this.live = h("div", {});
      return page("GitOps", this.status, this.live);
    },
    // Reconcile, suspend and resume, through the same API the CLI uses (the token as for every action).
    buttons(kind, o) {
      const key = `${o.metadata.namespace}/${o.metadata.name}`;
      const noun = kind === "sources" ? `${o.kind} ${key}` : `Kustomization ${key}`;
      const base = `/api/v1/${kind}/${key}`;
      const st = o.status || {};
      if (st.readOnly) return h("span", { class: "muted small" }, `${st.readOnly}'s (read-only): use the flux command`);
      const b = (label, path, text, danger) => actionButton(label, path, { title: `${label} ${noun}?`, text, ok: label, danger }, this.status,
        { action: `${label.toLowerCase()}:${key}`, cls: danger ? "danger small" : "small" });
      const out = [b("Reconcile", `${base}/reconcile${kind === "kustomizations" ? "?withSource=true" : ""}`,
        kind === "sources" ? `Reconcile ${noun} now: fetch its newest commit; a new one is applied by its Kustomizations.`
          : `Reconcile ${noun} now: fetch its source, then build and apply the newest revision.`)];
      if (o.spec.suspend) out.push(h("span", { class: "muted small" }, "suspended in Git (spec.suspend)"));
      else if (st.suspended) out.push(b("Resume", `${base}/resume`, `Resume ${noun}: it is reconciled again at its interval.`));
      else out.push(b("Suspend", `${base}/suspend`, kind === "sources"
        ? `Suspend ${noun}: no more fetching; new commits are not applied until resumed.`
        : `Suspend ${noun}: nothing more is applied from Git until resumed; what runs stays as it is.`, true));
      return h("div", { class: "buttons tight" }, out);
    },
    async update() {
      const [src, ks] = await Promise.all([get("/api/v1/sources"), get("/api/v1/kustomizations")]);
      const key = (o) => `${o.metadata.namespace}/${o.metadata.name}`;
      const conds = (s) => h("ul", { class: "plain" }, (s.conditions || []).map((c) => h("li", {}, h("strong", { class: c.status }, `${c.type}=${c.status}`),
        ` ${c.reason || ""}${c.message ? `: ${c.message}` : ""}`)));
      const ready = (s) => { const r = (s.conditions || []).find((c) => c.type === "Ready"); return badge(r ? r.status : "Unknown"); };
      const suspended = (o) => (o.spec.suspend ? "yes (in Git)" : o.status.suspended ? "yes" : "no");
      replace(this.live,
        h("h2", {}, "Sources"),
        table(["Source", "URL", "Revision", "Suspended", "Ready", "Conditions", "Actions"], (src ? src.items : []).map((o) => [
          h("td", { class: "mono" }, `${o.kind} ${key(o)}`), h("td", { class: "mono" }, o.spec.url || ""),
          h("td", { class: "mono", title: (o.status.artifact || {}).revision || "" }, short((o.status.artifact || {}).revision)),
          h("td", { "data-suspended": `source:${key(o)}` }, suspended(o)), h("td", {}, ready(o.status)), h("td", {}, conds(o.status)),
          h("td", {}, this.buttons("sources", o)),
        ]), "No sources."),
        h("h2", {}, "Kustomizations"),
        table(["Kustomization", "Source", "Path", "Applied revision", "Suspended", "Ready", "Conditions", "Actions"], (ks ? ks.items : []).map((o) => [
          h("td", { class: "mono" }, key(o)), h("td", { class: "mono" }, `${o.spec.sourceRef.kind} ${o.spec.sourceRef.name}`), h("td", { class: "mono" }, o.spec.path || "./"),
          h("td", { class: "mono", title: o.status.lastAppliedRevision || "" }, short(o.status.lastAppliedRevision)),
          h("td", { "data-suspended": `kustomization:${key(o)}` }, suspended(o)), h("td", {}, ready(o.status)), h("td", {}, conds(o.status)),
          h("td", {}, this.buttons("kustomizations", o)),
        ]), "No Kustomizations."));
    },
  };

  // -- routing and live updates -----------------------------------------------------------------------
  const ROUTES = [
    [/^#?\/?$/, overview], [/^#\/canary\/([^/]+)\/([^/]+)(?:\/run\/(\d+))?$/, canary], [/^#\/violations$/, violations],
    [/^#\/flags$/, flags], [/^#\/events(?:\?(.*))?$/, events], [/^#\/gitops$/, gitops],
  ];

  async function show() {
    const hash = location.hash || "#/";
    const path = hash.split("?")[0];
    for (const a of document.querySelectorAll("nav a")) {
      if (a.getAttribute("href") === path) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    for (const [re, p] of ROUTES) {
      const m = hash.match(re);
      if (!m) continue;
      state.page = p;
      main.replaceChildren(...(await p.build(...m.slice(1).map((x) => (x === undefined ? undefined : decodeURIComponent(x))))));
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
