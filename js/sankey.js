// AttributionSankey: concept nodes per layer and relevance flows (d3-sankey, bundled). Per layer
// the unlabelled components and the labels with a small share are merged into one hatched node
// (click it to expand, "collapse" to merge again); every other node is a box with its name, its
// number of components and its share of the class's relevance written inside it, so no text
// sits on the flows. Clicking a node opens a gallery of its components.
import { sankey, sankeyLinkHorizontal } from "d3-sankey";
import { h, replace, fmt, compName, root } from "./lib/dom.js";
import { channel, errorBanner, watch, select, selection } from "./lib/model.js";
import { thumbStrip } from "./lib/thumbs.js";
import { assignColors, themeColors, onThemeChange, UNLABELLED_COLOR } from "./lib/theme.js";
import { selectBox, setOptions, header, chip, emptyNote, tooltip, ready, pct } from "./lib/ui.js";

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
let uid = 0;
const MIN_SHARE = 0.03; // a labelled node under 3 % of its layer's |relevance| is merged
const MAX_OWN = 8; // at most 8 labelled nodes of their own per layer (the largest)

/**
 * Merge, per layer not in `expanded`, the unlabelled nodes and the small labelled ones into one
 * node (id "merged:<layer>"); edges are re-pointed and summed. Node shares are relative to the
 * sum of |relevance| of the layer's nodes (the class column keeps 100 %).
 */
function mergeSmall(rawNodes, rawEdges, graphLayers, expanded) {
  const byLayer = new Map();
  for (const n of rawNodes) (byLayer.get(n.layer) || byLayer.set(n.layer, []).get(n.layer)).push(n);
  const into = new Map();
  const merged = [];
  const total = new Map();
  for (const [layer, ns] of byLayer) {
    total.set(layer, ns.reduce((a, n) => a + Math.abs(n.relevance ?? 0), 0) || 1);
    if (!graphLayers.includes(layer) || expanded.has(layer)) continue;
    const tot = total.get(layer);
    const own = new Set(ns.filter((n) => n.labelled && Math.abs(n.relevance ?? 0) / tot >= MIN_SHARE)
      .sort((a, b) => Math.abs(b.relevance ?? 0) - Math.abs(a.relevance ?? 0)).slice(0, MAX_OWN));
    const rest = ns.filter((n) => !own.has(n));
    if (rest.length < 2) continue;
    const id = `merged:${layer}`;
    merged.push({
      id, layer, label: "other", labelled: false, merged: true,
      components: rest.flatMap((n) => n.components), relevance: rest.reduce((a, n) => a + (n.relevance ?? 0), 0),
      members: rest.map((n) => n.id), nLabels: rest.filter((n) => n.labelled).length,
    });
    for (const n of rest) into.set(n.id, id);
  }
  const nodes = rawNodes.filter((n) => !into.has(n.id)).concat(merged);
  const sums = new Map();
  for (const e of rawEdges) {
    const src = into.get(e.source) || e.source, tgt = into.get(e.target) || e.target;
    const key = `${src}\u0000${tgt}`;
    const cur = sums.get(key) || sums.set(key, { source: src, target: tgt, weight: 0, signed_weight: 0 }).get(key);
    cur.weight += e.weight;
    cur.signed_weight += e.signed_weight ?? e.weight;
  }
  for (const n of nodes) n.share = (n.relevance ?? 0) / total.get(n.layer);
  return { nodes, edges: [...sums.values()] };
}

function render({ model, el }) {
  root(el, "sankey");
  const chan = channel(model);
  const banner = errorBanner(model);
  const targetSel = selectBox([], model.get("target"), (v) => chan.send({ type: "target", target: Number(v) }), { "aria-label": "target class" });
  const legend = h("div", { class: "slw-legend slw-sankey-legend", dataset: { testid: "slw-sankey-legend" } });
  const svgWrap = h("div", { style: { position: "relative" } });
  const panel = h("div", { class: "slw-node-gallery", dataset: { testid: "slw-node-gallery" } });
  panel.style.display = "none";
  el.append(header("Attribution graph", h("span", { class: "slw-sub", text: "relevance flowing into class" }), targetSel), banner.el, legend, svgWrap, panel);
  const tip = tooltip(svgWrap);
  const hatchId = `slw-hatch-${++uid}`;
  let strips = [];
  let expanded = new Set();
  let drawnW = 0; // the width of the last drawing
  let theme = themeColors(el);
  const measure = document.createElement("canvas").getContext("2d");
  const fit = (text, px, font) => {
    measure.font = font;
    if (measure.measureText(text).width <= px) return text;
    let lo = 0, hi = text.length;
    while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (measure.measureText(`${text.slice(0, mid)}…`).width <= px) lo = mid; else hi = mid - 1; }
    return `${text.slice(0, lo)}…`;
  };

  const drawLegend = () => {
    const items = [
      h("span", { class: "slw-legend-item" }, h("span", { class: "slw-flow-swatch" }), h("span", { text: "band width = relevance flow; % = share of the class's relevance" })),
      h("span", { class: "slw-legend-item" }, h("b", { text: "n" }), h("span", { text: "= components in the node" })),
      h("span", { class: "slw-legend-item" }, h("span", { class: "slw-hatch-swatch" }), h("span", { text: "unlabelled and small groups, merged: click to expand" })),
      h("span", { class: "slw-legend-item" }, h("span", { class: "slw-neg-text", text: "−%" }), h("span", { text: "relevance against the class" })),
    ];
    const back = [...expanded].map((layer) => h("button", {
      class: "slw-small", text: `collapse ${layer}`, dataset: { testid: "slw-sankey-collapse" },
      title: `merge the unlabelled and small groups of ${layer} again`,
      on: { click: () => { expanded.delete(layer); draw(); } },
    }));
    replace(legend, items, back);
  };

  const draw = () => {
    setOptions(targetSel, model.get("targets").map(([i, name]) => [i, `${i}: ${name}`]), model.get("target"));
    const rawNodes = model.get("nodes") || [];
    const graphLayers = model.get("layers");
    // columns: the graph's layers (input -> output), then any other column such as the class node
    const layers = [...graphLayers];
    for (const n of rawNodes) if (!layers.includes(n.layer)) layers.push(n.layer);
    drawLegend();
    if (!rawNodes.length) {
      replace(svgWrap, emptyNote("no attribution graph for this class"));
      ready(el);
      return;
    }
    const { nodes: shown, edges: shownEdges } = mergeSmall(rawNodes, model.get("edges") || [], graphLayers, expanded);
    // the width laid out now; while the view is not laid out (width 0: before it is attached, or
    // hidden) the last width drawn, so that a redraw then (a theme change) is not scaled up later
    const W = Math.max(440, Math.round(svgWrap.getBoundingClientRect().width || drawnW || el.clientWidth || 640));
    drawnW = W;
    const perCol = Math.max(...layers.map((l) => shown.filter((n) => n.layer === l).length));
    const H = Math.max(300, Math.min(680, 60 + perCol * 46));
    const BW = Math.round(Math.max(100, Math.min(180, (W * 0.6) / layers.length))); // node box width
    const labels = [...new Set(shown.filter((n) => n.labelled && graphLayers.includes(n.layer)).map((n) => n.label))];
    const counts = labels.map((l) => shown.filter((n) => n.label === l && n.labelled).reduce((a, n) => a + Math.abs(n.share), 0));
    const pal = assignColors(counts).colors;
    // (d3-sankey overwrites node.layer with its column number: the layer name travels as lname)
    const color = (n) => (!graphLayers.includes(n.lname) ? theme.accent : n.labelled ? pal[labels.indexOf(n.label)] : UNLABELLED_COLOR);
    const ids = new Set(shown.map((n) => n.id));
    const nodes = shown.map((n) => ({ ...n, lname: n.layer, col: Math.max(0, layers.indexOf(n.layer)) }));
    const links = shownEdges.filter((e) => ids.has(e.source) && ids.has(e.target) && e.weight > 0).map((e) => ({ ...e, value: e.weight }));
    for (const n of nodes) {
      const touching = links.some((e) => e.source === n.id || e.target === n.id);
      if (!touching) n.fixedValue = Math.max(1e-6, Math.abs(n.relevance ?? 0) * 1e-3);
    }
    let graph;
    try {
      graph = sankey().nodeId((d) => d.id).nodeAlign((d) => d.col).nodeWidth(BW).nodePadding(16)
        .nodeSort((a, b) => (b.labelled - a.labelled) || ((b.relevance ?? 0) - (a.relevance ?? 0)))
        .extent([[1, 24], [W - 1, H - 4]])({ nodes, links });
    } catch (err) {
      replace(svgWrap, emptyNote(`cannot lay out the graph: ${err.message}`));
      ready(el);
      return;
    }
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "attribution Sankey" });
    svg.append(s("defs", {}, s("pattern", { id: hatchId, width: 7, height: 7, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      s("rect", { width: 7, height: 7, fill: UNLABELLED_COLOR, "fill-opacity": 0.22 }), s("line", { x1: 0, y1: 0, x2: 0, y2: 7, stroke: UNLABELLED_COLOR, "stroke-width": 2.5, "stroke-opacity": 0.7 }))));
    // layer names over their columns
    const colX = new Map();
    for (const n of graph.nodes) colX.set(n.col, n.x0);
    layers.forEach((l, i) => {
      if (!colX.has(i)) return;
      svg.append(s("text", { class: "slw-layer-name", x: colX.get(i) + BW / 2, y: 13, "text-anchor": "middle" }, graphLayers.includes(l) ? l : "class"));
    });
    const path = sankeyLinkHorizontal();
    const gl = s("g");
    for (const l of graph.links) {
      const p = s("path", { class: "slw-link", d: path(l), stroke: color(l.source), "stroke-width": Math.max(1, l.width) });
      p.addEventListener("mousemove", (e) => {
        const b = svgWrap.getBoundingClientRect();
        tip.show(e.clientX - b.left, e.clientY - b.top, h("div", { text: `${nodeName(l.source)} → ${nodeName(l.target)}` }),
          h("div", { class: "slw-sub", text: `relevance flow ${fmt(l.signed_weight ?? l.value)} (${pct(l.signed_weight ?? l.value)} of the class's relevance)` }));
      });
      p.addEventListener("mouseleave", () => tip.hide());
      gl.append(p);
    }
    svg.append(gl);
    const open = model.get("open_node");
    const family = getComputedStyle(svgWrap).fontFamily || theme.font; // what the SVG text is drawn with
    const font = `11px ${family}`, bold = `600 11px ${family}`;
    for (const n of graph.nodes) {
      const isClass = !graphLayers.includes(n.lname);
      const g = s("g", {
        class: `slw-node${n.id === open ? " slw-open" : ""}${n.merged ? " slw-merged" : ""}`, "data-testid": "slw-sankey-node",
        "data-id": n.id, "data-layer": n.lname, "data-merged": n.merged ? "true" : "false", tabindex: 0,
      });
      const hgt = Math.max(3, n.y1 - n.y0);
      const c = color(n);
      g.append(s("rect", { class: "slw-node-box", x: n.x0, y: n.y0, width: BW, height: hgt, rx: 3,
        fill: n.labelled ? c : `url(#${hatchId})`, "fill-opacity": n.labelled ? 0.2 : 1 }));
      g.append(s("rect", { x: n.x0, y: n.y0, width: 4, height: hgt, fill: c, rx: 1 }));
      // the text, inside the box: name on one line, "n · share" on a second when there is room
      const name = isClass ? `class “${n.label}”` : nodeName(n);
      const count = isClass ? "" : `${n.components.length}`;
      const share = isClass ? "" : pct(n.share);
      const room = BW - 12;
      const cy = (n.y0 + n.y1) / 2;
      const t1 = s("text", { x: n.x0 + 8, y: hgt >= 30 ? cy - 7 : cy, dy: "0.35em", class: n.labelled ? "slw-name" : "slw-name slw-unl" });
      if (hgt >= 30 || isClass) {
        t1.append(fit(name, room, bold));
        g.append(t1);
        if (!isClass) {
          const t2 = s("text", { x: n.x0 + 8, y: cy + 8, dy: "0.35em", class: "slw-meta" });
          t2.append(s("tspan", {}, `n ${count} · `), s("tspan", { class: (n.share ?? 0) < 0 ? "slw-neg-text" : "" }, share));
          g.append(t2);
        }
      } else {
        // one line: "name  n · share"; where the name would be cut, drop n (it is in the tooltip)
        measure.font = bold;
        const nameW = measure.measureText(name).width;
        measure.font = font;
        const full = measure.measureText(`  ${count} · ${share}`).width;
        const short = measure.measureText(`  ${share}`).width;
        const withCount = nameW + full <= room;
        t1.append(fit(name, Math.max(24, room - (withCount ? full : short)), bold));
        if (withCount) t1.append(s("tspan", { class: "slw-meta" }, `  ${count} · `));
        else t1.append(s("tspan", { class: "slw-meta" }, "  "));
        t1.append(s("tspan", { class: `slw-meta${(n.share ?? 0) < 0 ? " slw-neg-text" : ""}` }, share));
        g.append(t1);
      }
      const onOpen = () => {
        if (isClass) return; // the class itself: no components to show
        if (n.merged) { expanded.add(n.lname); tip.hide(); draw(); return; }
        chan.send({ type: "open_node", id: n.id === model.get("open_node") ? "" : n.id });
      };
      g.addEventListener("click", onOpen);
      g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onOpen(); } });
      g.addEventListener("mousemove", (e) => {
        const b = svgWrap.getBoundingClientRect();
        tip.show(e.clientX - b.left, e.clientY - b.top,
          h("div", { text: isClass ? `class “${n.label}”` : n.merged ? `other: ${n.members.length} groups merged` : n.labelled ? n.label : "components without a concept of the vocabulary" }),
          isClass ? null : h("div", { class: "slw-sub", text: `${n.lname} · ${n.components.length} components · ${pct(n.share)} of the class's relevance` }),
          n.merged ? h("div", { class: "slw-sub", text: `${n.nLabels} small label group${n.nLabels === 1 ? "" : "s"} (< ${MIN_SHARE * 100} % each) and the unlabelled components` }) : null,
          h("div", { class: "slw-hint", text: n.merged ? "click to expand" : isClass ? "" : "click to open its gallery" }));
      });
      g.addEventListener("mouseleave", () => tip.hide());
      svg.append(g);
    }
    replace(svgWrap, svg, tip.el);
    drawPanel();
    ready(el);
  };
  const nodeName = (n) => (n.merged ? "other" : n.labelled ? n.label : n.label || "(unlabelled)");

  const drawPanel = () => {
    strips.forEach((x) => x.destroy());
    strips = [];
    const id = model.get("open_node");
    const node = (model.get("nodes") || []).find((n) => n.id === id);
    if (!node) {
      panel.style.display = "none";
      panel.replaceChildren();
      return;
    }
    panel.style.display = "";
    const sel = selection(model);
    const shown = node.components.slice(0, 12);
    const close = h("button", { text: "close", on: { click: () => chan.send({ type: "open_node", id: "" }) } });
    const rows = shown.map((c) => {
      const strip = thumbStrip(chan, node.layer, c, 8, { size: 56 });
      strips.push(strip);
      return h("div", { class: `slw-row${sel && sel.layer === node.layer && sel.component === c ? " slw-selected" : ""}`, title: "select this component in every view",
        dataset: { layer: node.layer, component: c }, on: { click: () => select(model, node.layer, c) } },
        h("span", { class: "slw-mono", text: compName(node.layer, c) }), strip);
    });
    replace(panel,
      header(node.labelled ? "Concept" : "Unlabelled group", node.labelled ? chip(node.label, { cls: "slw-accent" }) : chip("(unlabelled)", { cls: "slw-none" }),
        h("span", { class: "slw-sub", text: `${node.layer} · ${node.components.length} components${node.components.length > shown.length ? ` (first ${shown.length} shown)` : ""}` }),
        h("span", { class: "slw-spacer" }), close),
      h("div", { class: "slw-list" }, rows));
  };
  const markSel = () => {
    const sel = selection(model);
    for (const row of panel.querySelectorAll(".slw-row")) {
      row.classList.toggle("slw-selected", !!sel && row.dataset.layer === sel.layer && Number(row.dataset.component) === sel.component);
    }
  };

  draw();
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => {
    const w = Math.round(svgWrap.getBoundingClientRect().width);
    if (w > 0 && Math.abs(Math.max(440, w) - drawnW) > 8) draw();
  }) : null;
  ro?.observe(svgWrap);
  const offs = [watch(model, ["nodes", "edges", "layers", "targets", "target"], () => { expanded = new Set(); draw(); }),
    watch(model, ["open_node"], draw), watch(model, ["selection"], markSel)];
  const offTheme = onThemeChange(() => { theme = themeColors(el); draw(); });
  return () => {
    offs.forEach((f) => f());
    offTheme();
    ro?.disconnect();
    strips.forEach((x) => x.destroy());
    banner.off();
    chan.close();
  };
}

export default { render };
