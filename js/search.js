// SearchBox: text or image probe -> ranked components with score bars, labels and lazy thumbnails.
// Hits no better than the empty prompt (score <= 0) are folded away under a separator; before
// anything is typed the largest label groups are offered as clickable concepts.
import { h, replace, compName, debounce, root } from "./lib/dom.js";
import { channel, errorBanner, select, selection, watch } from "./lib/model.js";
import { thumbStrip } from "./lib/thumbs.js";
import { scoreBar, selectBox, setOptions, header, chip, emptyNote, ready } from "./lib/ui.js";

function render({ model, el }) {
  root(el, "search");
  const chan = channel(model);
  const banner = errorBanner(model);
  const input = h("input", {
    type: "search", placeholder: "a concept, e.g. watermark", "aria-label": "search query",
    dataset: { testid: "slw-search-input" }, value: model.get("query"),
  });
  const layerSel = selectBox([], model.get("layer"), () => send());
  const layerOpts = () => setOptions(layerSel, [["", "all layers"], ...model.get("layers").map((l) => [l, l])], model.get("layer"));
  layerOpts();
  const imgIndex = h("input", { type: "number", min: 0, placeholder: "sample #", title: "search with a dataset image", class: "slw-sample-in" });
  const imgBtn = h("button", { text: "by image", title: "search with the dataset image of this index" });
  const status = h("span", { class: "slw-sub" });
  const list = h("div", { class: "slw-list", dataset: { testid: "slw-results" } });
  el.append(
    header("Concept search", status),
    banner.el,
    h("div", { class: "slw-header slw-search-bar" }, input, layerSel,
      model.get("num_samples") > 0 ? h("span", { class: "slw-nowrap" }, imgIndex, imgBtn) : null),
    list,
  );

  const send = () => chan.send({ type: "search", query: input.value, layer: layerSel.value });
  const typed = debounce(send, 150);
  input.addEventListener("input", typed);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      typed.cancel();
      send();
    }
  });
  imgBtn.addEventListener("click", () => {
    const v = Number(imgIndex.value);
    chan.send({ type: "search_image", index: Number.isInteger(v) ? v : imgIndex.value, layer: layerSel.value });
  });

  let strips = [];
  let showNull = false;
  const suggestions = () => {
    const items = model.get("suggestions") || [];
    const gaps = model.get("gaps") || [];
    if (!items.length) return emptyNote("type a concept to search the model's components");
    return h("div", { class: "slw-suggest", dataset: { testid: "slw-suggestions" } },
      h("div", { class: "slw-sub", text: "largest label groups: click one to search it" }),
      h("div", { class: "slw-chips" }, items.map((s) => h("button", {
        class: "slw-chip slw-suggestion", title: `search “${s.concept}” (${s.components} components carry this label)`,
        dataset: { testid: "slw-suggestion", concept: s.concept },
        on: { click: () => { input.value = s.concept; typed.cancel(); send(); } },
      }, h("span", { text: s.concept }), h("span", { class: "slw-count", text: String(s.components) })))),
      gaps.length ? h("div", { class: "slw-gaps" },
        h("div", { class: "slw-sub", text: `no component carries ${gaps.length === 1 ? "this concept" : `these ${gaps.length} concepts`} (gaps): search one to see its nearest components` }),
        h("div", { class: "slw-chips" }, gaps.map((g) => h("button", {
          class: "slw-chip slw-gap", title: `search “${g}”: no component is labelled with it`, dataset: { concept: g },
          on: { click: () => { input.value = g; typed.cancel(); send(); } },
        }, h("span", { text: g }))))) : null);
  };
  const row = (r, max, sel, n, isNull) => {
    const strip = thumbStrip(chan, r.layer, r.component, n, { size: 56, title: (i, m) => `example ${i + 1} of ${m.total}` });
    strips.push(strip);
    return h(
      "div",
      {
        class: `slw-row${isNull ? " slw-null" : ""}${sel && sel.layer === r.layer && sel.component === r.component ? " slw-selected" : ""}`,
        dataset: { testid: "slw-result", layer: r.layer, component: r.component, score: r.score ?? "" },
        title: "select this component in every view",
        style: isNull && !showNull ? { display: "none" } : {},
        on: { click: () => select(model, r.layer, r.component) },
      },
      h("span", { class: "slw-rank", text: r.rank + 1 }),
      h("div", { class: "slw-who" },
        r.label === null ? chip("no label", { cls: "slw-none" }) : chip(r.label, { title: r.label }),
        h("span", { class: "slw-sub slw-mono", text: compName(r.layer, r.component) })),
      scoreBar(r.score ?? 0, max, `score ${r.score} (cosine minus the empty-prompt baseline)`),
      strip,
    );
  };
  const draw = () => {
    strips.forEach((s) => s.destroy());
    strips = [];
    const results = model.get("results") || [];
    const q = model.get("query");
    const probe = model.get("probe_index");
    const good = results.filter((r) => (r.score ?? 0) > 0);
    const weak = results.filter((r) => !((r.score ?? 0) > 0));
    status.textContent = results.length ? `${good.length} hit${good.length === 1 ? "" : "s"} above the empty prompt${probe !== null ? ` for image #${probe}` : ""}` : "";
    if (!results.length) {
      replace(list, q || probe !== null ? emptyNote("no results") : suggestions());
      ready(el);
      return;
    }
    const max = Math.max(1e-9, ...results.map((r) => Math.abs(r.score ?? 0)));
    const sel = selection(model);
    const n = model.get("n_thumbs");
    const rows = good.map((r) => row(r, max, sel, n, false));
    if (weak.length) {
      const sep = h("button", {
        class: "slw-null-sep", dataset: { testid: "slw-search-null" },
        title: "a score <= 0 means the component matches this probe no better than the empty prompt (paper eq. 4)",
        on: { click: () => { showNull = !showNull; draw(); } },
      }, `${showNull ? "▾" : "▸"} ${weak.length} more no better than the empty prompt (score ≤ 0)`);
      rows.push(sep, ...weak.map((r) => row(r, max, sel, n, true)));
    }
    if (!good.length) rows.unshift(emptyNote(`no component matches “${q}” better than the empty prompt`));
    replace(list, rows);
    ready(el);
  };
  const markSel = () => {
    const sel = selection(model);
    for (const r of list.querySelectorAll("[data-testid='slw-result']")) {
      const on = sel && r.dataset.layer === sel.layer && Number(r.dataset.component) === sel.component;
      r.classList.toggle("slw-selected", !!on);
    }
  };
  draw();
  const offs = [
    watch(model, ["results", "n_thumbs", "suggestions", "gaps"], draw),
    watch(model, ["selection"], markSel),
    watch(model, ["layers", "layer"], layerOpts),
    watch(model, ["query"], () => {
      if (document.activeElement !== input) input.value = model.get("query");
    }),
  ];
  return () => {
    offs.forEach((f) => f());
    banner.off();
    strips.forEach((s) => s.destroy());
    chan.close();
  };
}

export default { render };
