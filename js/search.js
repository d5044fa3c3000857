// SearchBox: text or image probe -> ranked components with score bars, labels and lazy thumbnails.
import { h, replace, compName, debounce, root } from "./lib/dom.js";
import { channel, errorBanner, select, selection, watch } from "./lib/model.js";
import { thumbStrip } from "./lib/thumbs.js";
import { scoreBar, selectBox, setOptions, header, chip, emptyNote, ready } from "./lib/ui.js";

function render({ model, el }) {
  root(el, "search");
  const chan = channel(model);
  const banner = errorBanner(model);
  const input = h("input", {
    type: "search", placeholder: "search concepts, e.g. “watermark”", "aria-label": "search query",
    dataset: { testid: "slw-search-input" }, value: model.get("query"),
  });
  const layerSel = selectBox([], model.get("layer"), () => send());
  const layerOpts = () => setOptions(layerSel, [["", "all layers"], ...model.get("layers").map((l) => [l, l])], model.get("layer"));
  layerOpts();
  const imgIndex = h("input", { type: "number", min: 0, placeholder: "sample #", title: "search with a dataset image", style: { width: "86px" } });
  const imgBtn = h("button", { text: "image", title: "search with the dataset image of this index" });
  const status = h("span", { class: "slw-sub" });
  const list = h("div", { class: "slw-list", dataset: { testid: "slw-results" } });
  el.append(
    header("Concept search", status),
    banner.el,
    h("div", { class: "slw-header" }, input, layerSel, model.get("num_samples") > 0 ? [imgIndex, imgBtn] : null),
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
  const draw = () => {
    strips.forEach((s) => s.destroy());
    strips = [];
    const results = model.get("results") || [];
    const q = model.get("query");
    const probe = model.get("probe_index");
    status.textContent = results.length ? `${results.length} hits${probe !== null ? ` for image #${probe}` : ""}` : "";
    if (!results.length) {
      replace(list, emptyNote(q || probe !== null ? "no results" : "type a concept to search the model's components"));
      ready(el);
      return;
    }
    const max = Math.max(1e-9, ...results.map((r) => Math.abs(r.score ?? 0)));
    const sel = selection(model);
    const n = model.get("n_thumbs");
    const rows = results.map((r) => {
      const strip = thumbStrip(chan, r.layer, r.component, n, {
        size: 64, title: (i, m) => `example ${i + 1} of ${m.total}`,
      });
      strips.push(strip);
      const row = h(
        "div",
        {
          class: `slw-row${sel && sel.layer === r.layer && sel.component === r.component ? " slw-selected" : ""}`,
          dataset: { testid: "slw-result", layer: r.layer, component: r.component },
          title: "select this component in every view",
          on: { click: () => select(model, r.layer, r.component) },
        },
        h("span", { class: "slw-rank", text: r.rank + 1 }),
        h("div", { class: "slw-who" },
          r.label === null ? chip("no label", { cls: "slw-none" }) : chip(r.label, { title: r.label }),
          h("span", { class: "slw-sub slw-mono", text: compName(r.layer, r.component) })),
        scoreBar(r.score ?? 0, max, `score ${r.score} (cosine minus the empty-prompt baseline)`),
        strip,
      );
      return row;
    });
    replace(list, rows);
    ready(el);
  };
  const markSel = () => {
    const sel = selection(model);
    for (const row of list.children) {
      const on = sel && row.dataset.layer === sel.layer && Number(row.dataset.component) === sel.component;
      row.classList.toggle("slw-selected", !!on);
    }
  };
  draw();
  const offs = [
    watch(model, ["results", "n_thumbs"], draw),
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
