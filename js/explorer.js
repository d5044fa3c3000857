// Explorer header: the lens at a glance and the current linked selection; the views themselves
// are sibling widgets in the same box (ipywidgets layout in Jupyter, marimo's stacks in marimo),
// linked in Python.
import { h, replace, compName, root } from "./lib/dom.js";
import { errorBanner, watch, selection } from "./lib/model.js";
import { chip, ready } from "./lib/ui.js";

function render({ model, el }) {
  root(el, "explorer");
  const banner = errorBanner(model);
  const stats = h("span", { class: "slw-sub" });
  const sel = h("span", { dataset: { testid: "slw-explorer-selection" } });
  const progress = h("span", { class: "slw-hint" });
  el.append(h("span", { class: "slw-logo", text: "SemanticLens" }), stats, h("span", { class: "slw-spacer" }), h("span", { class: "slw-sub", text: "selected:" }), sel, progress, banner.el);
  const draw = () => {
    const s = model.get("summary") || {};
    const layers = (s.layers || []).map((l) => `${l.name} (${l.components})`).join(", ");
    stats.textContent = `${layers}${s.m ? ` · m = ${s.m}` : ""}${s.classes ? ` · ${s.classes} classes` : ""}`;
    const cur = selection(model);
    const lab = model.get("selection_label");
    replace(sel, cur ? h("span", { class: "slw-mono", text: compName(cur.layer, cur.component) }) : h("span", { class: "slw-sub", text: "nothing" }),
      " ", cur ? (lab ? chip(lab, { cls: "slw-accent" }) : chip("no label", { cls: "slw-none" })) : null);
  };
  // count the sibling views that have drawn (they set data-ready on their root element)
  const box = () => el.closest(".slw-explorer-box");
  let done = false;
  const check = () => {
    if (done) return;
    const b = box();
    if (!b) {
      // no ipywidgets box around the views (marimo lays them out itself, each in its own shadow
      // root): nothing to count, the header is ready once drawn
      if (el.isConnected) {
        done = true;
        clearInterval(timer);
        document.removeEventListener("slw-ready", onReady);
        ready(el);
      }
      return;
    }
    const views = b.querySelectorAll(".slw[data-testid]:not(.slw-explorer)");
    const n = b.querySelectorAll(".slw[data-ready='true']:not(.slw-explorer)").length;
    const want = model.get("n_views");
    progress.textContent = n >= want ? "" : `loading views ${n}/${want}…`;
    if (n >= want && views.length >= want) {
      done = true;
      clearInterval(timer);
      document.removeEventListener("slw-ready", onReady);
      b.dataset.allReady = "true";
      ready(el);
    }
  };
  const onReady = () => check();
  document.addEventListener("slw-ready", onReady);
  const timer = setInterval(check, 250);
  draw();
  check();
  const offs = [watch(model, ["summary", "selection", "selection_label"], draw)];
  return () => {
    offs.forEach((f) => f());
    banner.off();
    clearInterval(timer);
    document.removeEventListener("slw-ready", onReady);
  };
}

export default { render };
