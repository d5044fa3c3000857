// Small shared UI pieces: score bars, tooltips, select boxes, headers.
import { h, fmt } from "./dom.js";

/** A horizontal bar for a score; `max` sets full width. Negative scores draw in the warn colour. */
export function scoreBar(score, max, title) {
  const frac = max > 0 ? Math.max(0, Math.min(1, Math.abs(score) / max)) : 0;
  return h(
    "div",
    { class: "slw-bar", title: title ?? `score ${fmt(score)}` },
    h("div", { class: `slw-bar-fill${score < 0 ? " slw-neg" : ""}`, style: { width: `${(frac * 100).toFixed(1)}%` } }),
    h("span", { class: "slw-bar-text", text: fmt(score) }),
  );
}

/** A bar without text (put the number beside it): frac in [0, 1]; negative values in the warn colour. */
export function plainBar(frac, negative = false, title) {
  const f = Math.max(0, Math.min(1, Number.isFinite(frac) ? frac : 0));
  return h("div", { class: "slw-bar slw-bar-plain", title },
    h("div", { class: `slw-bar-fill${negative ? " slw-neg" : ""}`, style: { width: `${(f * 100).toFixed(1)}%` } }));
}

/** 0.0412 -> "4.1 %", 0.00058 -> "0.06 %", -0.12 -> "−12 %" */
export function pct(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  const a = Math.abs(x * 100);
  const s = a >= 10 ? a.toFixed(0) : a >= 1 ? a.toFixed(1) : a >= 0.1 ? a.toFixed(2) : a === 0 ? "0" : "<0.1";
  return `${x < 0 ? "−" : ""}${s} %`;
}

/** About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart). */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const p = 10 ** Math.floor(Math.log10(raw));
  const n = (st) => Math.floor(hi / st) - Math.ceil(lo / st) + 1;
  const step = [0.5, 1, 2, 2.5, 5, 10].map((m) => m * p).reduce((a, b) => (Math.abs(n(b) - count) < Math.abs(n(a) - count) ? b : a));
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : +v.toPrecision(12));
  return out;
}

/** One floating tooltip per view; content is built with h() (text only). */
export function tooltip(container) {
  const el = h("div", { class: "slw-tooltip", role: "tooltip" });
  el.style.display = "none";
  container.append(el);
  return {
    el,
    show(x, y, ...children) {
      el.replaceChildren(...children.flat().filter(Boolean));
      el.style.display = "";
      const box = container.getBoundingClientRect();
      const w = el.offsetWidth;
      const hh = el.offsetHeight;
      let left = x + 14;
      let top = y + 14;
      if (left + w > box.width) left = Math.max(0, x - w - 14);
      if (top + hh > box.height) top = Math.max(0, y - hh - 14);
      el.style.left = `${left}px`;
      el.style.top = `${top}px`;
    },
    hide() {
      el.style.display = "none";
    },
  };
}

/** <select> from [[value, text], ...]; text is set as text. */
export function selectBox(options, value, onChange, props = {}) {
  const sel = h("select", { class: "slw-select", ...props });
  setOptions(sel, options, value);
  sel.addEventListener("change", () => onChange(sel.value));
  return sel;
}

export function setOptions(sel, options, value) {
  sel.replaceChildren(...options.map(([v, t]) => h("option", { value: String(v), text: t })));
  if (value !== undefined && value !== null) sel.value = String(value);
}

export function header(title, ...rest) {
  return h("div", { class: "slw-header" }, h("span", { class: "slw-title", text: title }), ...rest);
}

export function chip(text, props = {}) {
  return h("span", { class: `slw-chip ${props.cls || ""}`, title: props.title, text });
}

export function emptyNote(text) {
  return h("div", { class: "slw-empty-note", text });
}

/** Mark a view as drawn (benchmarks and browser tests wait for data-ready="true"). */
export function ready(el, value = true) {
  el.dataset.ready = value ? "true" : "false";
  if (value) el.dispatchEvent(new CustomEvent("slw-ready", { bubbles: true }));
}
