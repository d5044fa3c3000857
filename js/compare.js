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
  const title = h("span", { class: "slw-title" });
  el.append(h("div", { class: "slw-header" }, title), banner.el, body);
  let strips = [];

  const draw = () => {
    strips.forEach((s) => s.destroy());
    strips = [];
    const [a, b] = model.get("names");
    const concept = model.get("concept");
    const pick = (c) => chan.send({ type: "concept", concept: c === model.get("concept") ? "" : c });
    title.textContent = `Compare ${a} and ${b}`;
    const col = (heading, items, kind) => h("div", { class: "slw-col" }, h("h4", { text: `${heading} (${items.length})` }),
      items.length ? items.map((c) => h("span", { class: `slw-chip${c === concept ? " slw-accent" : ""}`, title: "show examples from both", dataset: { testid: "slw-compare-concept", kind }, text: c, on: { click: () => pick(c) } })) : h("span", { class: "slw-sub", text: "none" }));
    const counts = [...(model.get("counts") || [])].filter((r) => r.count_a || r.count_b)
      .sort((x, y) => (y.count_a + y.count_b) - (x.count_a + x.count_b) || x.concept.localeCompare(y.concept));
    const maxC = Math.max(1, ...counts.map((r) => Math.max(r.count_a, r.count_b)));
    const bar = (v, side) => h("div", { class: `slw-cbar slw-cbar-${side}` }, h("div", { style: { width: `${(100 * v) / maxC}%` } }));
    const countChart = counts.length ? h("div", {}, h("h4", { class: "slw-counts-title", text: "components per label" }), h("div", { class: "slw-counts", dataset: { testid: "slw-compare-counts" } },
      h("span"), h("span", { class: "slw-sub slw-r", style: { gridColumn: "2 / 4" }, text: a }), h("span", { class: "slw-sub", text: b }),
      counts.map((r) => [
        h("span", { class: `slw-cname slw-clickable${r.concept === concept ? " slw-on" : ""}`, text: r.concept, title: "show examples from both", on: { click: () => pick(r.concept) } }),
        h("span", { class: "slw-cnum slw-r", text: r.count_a }), bar(r.count_a, "a"), h("span", { class: "slw-cpair" }, bar(r.count_b, "b"), h("span", { class: "slw-cnum", text: r.count_b })),
      ]))) : null;
    const side = (name, layer, comps, key) => h("div", {}, h("div", { class: "slw-sub", text: `${name}${name !== layer ? ` · ${layer}` : ""}: ${comps.length} component${comps.length === 1 ? "" : "s"} labelled “${concept}”${comps.length > 6 ? " (the first 6 shown)" : ""}` }),
      comps.length ? comps.slice(0, 6).map((c) => {
        const s = thumbStrip({ request: (m) => chan.request({ ...m, side: key }) }, layer, c, 6, { size: 56 });
        strips.push(s);
        return h("div", { style: { display: "flex", gap: "6px", alignItems: "center", marginTop: "4px" } }, h("span", { class: "slw-mono", style: { width: "90px" }, text: compName(layer, c) }), s);
      }) : emptyNote("no component carries it"));
    replace(body,
      h("div", { class: "slw-scores" },
        h("div", { class: "slw-score", title: `mean over ${a}'s components of the best cosine match in ${b} (paper eqs. 5/6)` }, h("div", { class: "slw-sub", text: `S(${a} → ${b})` }), h("b", { text: fmt(model.get("s_ab")) })),
        h("div", { class: "slw-score", title: `mean over ${b}'s components of the best cosine match in ${a} (paper eqs. 5/6)` }, h("div", { class: "slw-sub", text: `S(${b} → ${a})` }), h("b", { text: fmt(model.get("s_ba")) })),
        h("div", { class: "slw-hint slw-score-note", text: `S(X → Y): how well, on average, each component of X finds a component of Y that encodes the same concept (1 = all of them)` })),
      h("div", { class: "slw-compare-top" },
        h("div", { class: "slw-cols" }, col("shared", model.get("shared"), "shared"), col(`only in ${a}`, model.get("unique_a"), "a"), col(`only in ${b}`, model.get("unique_b"), "b")),
        countChart),
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
