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
