// A stacked bar chart of findings over time by level, drawn as SVG by hand (no library).
// Scales with its container (viewBox); every bar segment has a tooltip (<title>), and the
// chart has a text summary for screen readers.

import { LEVELS, svg } from "./dom.js";

const W = 960, H = 240, L = 44, R = 12, T = 12, B = 34;

function niceMax(n) {
  if (n <= 5) return Math.max(n, 1);
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

function label(t, interval) {
  const s = String(t).replace("T", " ");
  return /^[0-9]+[mh]$/.test(interval) ? s.slice(5, 16) : s.slice(0, 10);
}

/** The chart element for `series` ([{t, total, levels: {level: n}}]). */
export function stackedBars(series, interval, title) {
  const max = niceMax(Math.max(0, ...series.map((b) => b.total)));
  const plotW = W - L - R, plotH = H - T - B;
  const step = plotW / Math.max(series.length, 1);
  const barW = Math.max(1, Math.min(step * 0.8, 40));
  const y = (v) => T + plotH - (v / max) * plotH;
  const total = series.reduce((a, b) => a + b.total, 0);
  const peak = series.reduce((a, b) => (b.total > (a?.total ?? -1) ? b : a), null);
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": "chart-title chart-desc"
  });
  root.append(
    svg("title", { id: "chart-title" }, title),
    svg("desc", { id: "chart-desc" },
      `${total} findings in ${series.length} intervals of ${interval}` +
      (peak && peak.total ? `; the most, ${peak.total}, at ${label(peak.t, interval)} UTC.` : ".")),
  );
  for (const v of [0, max / 2, max]) {
    root.append(
      svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, Number.isInteger(v) ? v : v.toFixed(1)),
    );
  }
  series.forEach((b, i) => {
    const x = L + i * step + (step - barW) / 2;
    let base = 0;
    const g = svg("g", { class: "bar" });
    for (const lv of LEVELS) {
      const n = b.levels?.[lv] || 0;
      if (!n) continue;
      g.append(svg("rect", {
        x, width: barW, y: y(base + n), height: Math.max(1, y(base) - y(base + n)), class: `seg seg-${lv}`,
      }, svg("title", {}, `${label(b.t, interval)} UTC: ${n} ${lv}`)));
      base += n;
    }
    const other = b.total - base;
    if (other > 0) {
      g.append(svg("rect", { x, width: barW, y: y(base + other), height: Math.max(1, y(base) - y(base + other)), class: "seg seg-none" },
        svg("title", {}, `${label(b.t, interval)} UTC: ${other} without level`)));
    }
    root.append(g);
  });
  const ticks = Math.min(series.length, 6);
  for (let k = 0; k < ticks; k++) {
    const i = ticks === 1 ? 0 : Math.round((k * (series.length - 1)) / (ticks - 1));
    const x = L + i * step + step / 2;
    const anchor = ticks > 1 && k === 0 ? "start" : ticks > 1 && k === ticks - 1 ? "end" : "middle";
    const tx = anchor === "start" ? L + i * step : anchor === "end" ? L + (i + 1) * step : x;
    root.append(svg("text", { x: tx, y: H - B + 18, class: "axis", "text-anchor": anchor }, label(series[i].t, interval)));
  }
  root.append(svg("line", { x1: L, x2: W - R, y1: T + plotH, y2: T + plotH, class: "baseline" }));
  return root;
}
