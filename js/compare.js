// CompareView: S(A->B), S(B->A), shared / unique concepts, label counts, and for a clicked
// concept the components that carry it in both models with their concept examples.
import { h, replace, fmt, compName, root } from "./lib/dom.js";
import { channel, errorBanner, watch } from "./lib/model.js";
import { thumbStrip } from "./lib/thumbs.js";
import { header, chip, emptyNote, ready } from "./lib/ui.js";

function render({ model, el }) {
  root(el, "compare");
  const chan = channel(model);
  const banner = errorBanner(model);
  const body = h("div");
  el.append(header("Compare models"), banner.el, body);
  let strips = [];

  const draw = () => {
    strips.forEach((s) => s.destroy());
    strips = [];
    const [a, b] = model.get("names");
    const concept = model.get("concept");
    const pick = (c) => chan.send({ type: "concept", concept: c === model.get("concept") ? "" : c });
    const col = (title, items) => h("div", { class: "slw-col" }, h("h4", { text: `${title} (${items.length})` }),
      items.length ? items.map((c) => h("span", { class: `slw-chip${c === concept ? " slw-accent" : ""}`, title: "show examples from both models", dataset: { testid: "slw-compare-concept" }, text: c, on: { click: () => pick(c) } })) : h("span", { class: "slw-sub", text: "none" }));
    const counts = model.get("counts") || [];
    const side = (name, layer, comps, key) => h("div", {}, h("div", { class: "slw-sub", text: `${name} · ${layer}: ${comps.length} components labelled “${concept}”` }),
      comps.length ? comps.slice(0, 6).map((c) => {
        const s = thumbStrip({ request: (m) => chan.request({ ...m, side: key }) }, layer, c, 6, { size: 56 });
        strips.push(s);
        return h("div", { style: { display: "flex", gap: "6px", alignItems: "center", marginTop: "4px" } }, h("span", { class: "slw-mono", style: { width: "90px" }, text: compName(layer, c) }), s);
      }) : emptyNote("no component carries it"));
    replace(body,
      h("div", { class: "slw-scores" },
        h("div", { class: "slw-score", title: "mean over A's components of the best cosine match in B" }, h("div", { class: "slw-sub", text: `S(${a} → ${b})` }), h("b", { text: fmt(model.get("s_ab")) })),
        h("div", { class: "slw-score", title: "mean over B's components of the best cosine match in A" }, h("div", { class: "slw-sub", text: `S(${b} → ${a})` }), h("b", { text: fmt(model.get("s_ba")) }))),
      h("div", { class: "slw-cols" }, col("shared", model.get("shared")), col(`only in ${a}`, model.get("unique_a")), col(`only in ${b}`, model.get("unique_b"))),
      counts.length ? h("details", { style: { marginTop: "8px" } }, h("summary", { class: "slw-sub", text: "label counts" }),
        h("table", { class: "slw-table" }, h("tr", {}, h("th", { text: "concept" }), h("th", { text: a }), h("th", { text: b })),
          counts.map((r) => h("tr", { class: "slw-clickable", on: { click: () => pick(r.concept) } }, h("td", { text: r.concept }), h("td", { text: r.count_a }), h("td", { text: r.count_b }))))) : null,
      concept ? h("div", { class: "slw-sides", dataset: { testid: "slw-compare-sides" } },
        side(a, model.get("layer_a"), model.get("components_a"), "a"), side(b, model.get("layer_b"), model.get("components_b"), "b")) : null);
    ready(el);
  };
  draw();
  const offs = [watch(model, ["names", "s_ab", "s_ba", "shared", "unique_a", "unique_b", "counts", "concept", "components_a", "components_b"], draw)];
  return () => {
    offs.forEach((f) => f());
    strips.forEach((s) => s.destroy());
    banner.off();
    chan.close();
  };
}

export default { render };
