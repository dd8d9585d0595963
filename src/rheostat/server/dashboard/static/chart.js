// A small line chart drawn as SVG: time on x, one or more series, optional dashed threshold lines; and
// RheoTime, the one time format of every page (24-hour local time, the date added when not today).
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 640, H = 220, L = 46, R = 12, T = 12, B = 28;

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A tick step of 1, 2, 2.5 or 5 times a power of ten giving about four steps up to `v`; the axis ends at
  // the first multiple of it at or above `v` (99.5 ends at 100, not 200).
  function niceStep(v) {
    const raw = v / 4;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function clock(t) {
    if (!t) return "";
    const d = new Date(t * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function stamp(t) {
    if (!t) return "";
    const d = new Date(t * 1000);
    const today = new Date();
    const sameDay = d.getFullYear() === today.getFullYear() && d.getMonth() === today.getMonth() && d.getDate() === today.getDate();
    return sameDay ? clock(t) : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(t)}`;
  }

  // series: [{label, cls, points: [[t, value|null], ...]}]; thresholds: [{label, value}]
  function line(opts) {
    const series = opts.series || [];
    const thresholds = (opts.thresholds || []).filter((t) => typeof t.value === "number");
    const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
    const ts = pts.map((p) => p[0]);
    const t0 = ts.length ? Math.min(...ts) : 0;
    const t1 = ts.length ? Math.max(...ts) : 1;
    const span = t1 > t0 ? t1 - t0 : 1;
    const values = [...pts.map((p) => p[1]), ...thresholds.map((t) => t.value)];
    const yMin = opts.yMin !== undefined ? opts.yMin : Math.min(0, ...values);
    const top = opts.yMax !== undefined ? opts.yMax : Math.max(yMin, ...values);
    const stepY = top > yMin ? niceStep(top - yMin) : 0.25;
    const yMax = opts.yMax !== undefined ? opts.yMax : top > yMin ? yMin + Math.ceil((top - yMin) / stepY - 1e-9) * stepY : yMin + 1;
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const y = (v) => T + (1 - (v - yMin) / (yMax - yMin)) * (H - T - B);

    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": opts.title || "chart" });
    svg.appendChild(el("title", {}, opts.title || "chart"));
    const ticks = Math.min(10, Math.max(1, Math.round((yMax - yMin) / stepY)));
    for (let i = 0; i <= ticks; i++) {
      const v = yMin + ((yMax - yMin) * i) / ticks;
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      svg.appendChild(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "data-axis": "y" }, +v.toFixed(2) + (opts.unit || "")));
    }
    svg.appendChild(el("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
    if (ts.length) {
      svg.appendChild(el("text", { x: L, y: H - 8, "data-axis": "x" }, clock(t0)));
      if (t1 > t0) svg.appendChild(el("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", "data-axis": "x" }, clock((t0 + t1) / 2)));
      svg.appendChild(el("text", { x: W - R, y: H - 8, "text-anchor": "end", "data-axis": "x" }, clock(t1)));
    } else {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, opts.empty || "no data yet"));
    }
    for (const t of thresholds) {
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(t.value), y2: y(t.value), class: "threshold" }));
      svg.appendChild(el("text", { x: W - R - 4, y: y(t.value) - 4, "text-anchor": "end" }, `${t.label} ${t.value}`));
    }
    for (const s of series) {
      // A gap (no data) breaks the line instead of drawing through it.
      let d = "";
      let pen = false;
      for (const [t, v] of s.points) {
        if (v === null || v === undefined) { pen = false; continue; }
        // Weights hold until the next tick changes them: a step line, not a slope.
        if (pen && opts.step) d += `H${x(t).toFixed(1)}V${y(v).toFixed(1)}`;
        else d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      }
      const vals = s.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined);
      if (d) svg.appendChild(el("path", { d, class: `series ${s.cls}`, "data-series": s.label, "data-max": Math.max(...vals) }));
      const last = [...s.points].reverse().find((p) => p[1] !== null && p[1] !== undefined);
      if (last) svg.appendChild(el("circle", { cx: x(last[0]), cy: y(last[1]), r: 3, class: `series ${s.cls}` }));
    }
    return svg;
  }

  window.RheoChart = { line };
  window.RheoTime = { clock, stamp };
})();
