// AttributionSankey: concept nodes per layer and relevance flows (d3-sankey, bundled). Clicking a
// node opens a gallery of its components; unlabelled groups are hatched and named as such.
import { sankey, sankeyLinkHorizontal } from "d3-sankey";
import { h, replace, fmt, compName, root } from "./lib/dom.js";
import { channel, errorBanner, watch, select, selection } from "./lib/model.js";
import { thumbStrip } from "./lib/thumbs.js";
import { categorical } from "./lib/theme.js";
import { selectBox, setOptions, header, chip, emptyNote, tooltip, ready } from "./lib/ui.js";

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
let uid = 0;

function render({ model, el }) {
  root(el, "sankey");
  const chan = channel(model);
  const banner = errorBanner(model);
  const targetSel = selectBox([], model.get("target"), (v) => chan.send({ type: "target", target: Number(v) }), { "aria-label": "target class" });
  const svgWrap = h("div", { style: { position: "relative" } });
  const panel = h("div", { class: "slw-node-gallery", dataset: { testid: "slw-node-gallery" } });
  panel.style.display = "none";
  el.append(header("Attribution graph", h("span", { class: "slw-sub", text: "relevance flow for" }), targetSel), banner.el, svgWrap, panel);
  const tip = tooltip(svgWrap);
  const hatchId = `slw-hatch-${++uid}`;
  let strips = [];

  const draw = () => {
    setOptions(targetSel, model.get("targets").map(([i, name]) => [i, `${i}: ${name}`]), model.get("target"));
    const rawNodes = model.get("nodes") || [];
    // columns: the graph's layers (input -> output), then any other column such as the class node
    const layers = [...model.get("layers")];
    for (const n of rawNodes) if (!layers.includes(n.layer)) layers.push(n.layer);
    const rawEdges = model.get("edges") || [];
    if (!rawNodes.length) {
      replace(svgWrap, emptyNote("no attribution graph for this class"));
      ready(el);
      return;
    }
    const W = Math.max(420, Math.round(svgWrap.getBoundingClientRect().width || el.clientWidth || 640));
    const perCol = Math.max(...layers.map((l) => rawNodes.filter((n) => n.layer === l).length));
    const H = Math.max(220, Math.min(560, 40 + perCol * 34));
    const labels = [...new Set(rawNodes.filter((n) => n.labelled).map((n) => n.label))].sort();
    const color = (n) => (n.labelled ? categorical(labels.indexOf(n.label)) : "#9e9e9e");
    const ids = new Set(rawNodes.map((n) => n.id));
    const nodes = rawNodes.map((n) => ({ ...n, col: Math.max(0, layers.indexOf(n.layer)) }));
    for (const n of nodes) {
      const touching = rawEdges.some((e) => e.source === n.id || e.target === n.id);
      if (!touching) n.fixedValue = Math.max(1e-6, Math.abs(n.relevance ?? 0) * 1e-3);
    }
    const links = rawEdges.filter((e) => ids.has(e.source) && ids.has(e.target) && e.weight > 0).map((e) => ({ ...e, value: e.weight }));
    let graph;
    try {
      graph = sankey().nodeId((d) => d.id).nodeAlign((d) => d.col).nodeWidth(14).nodePadding(12)
        .nodeSort((a, b) => (b.labelled - a.labelled) || ((b.relevance ?? 0) - (a.relevance ?? 0)))
        .extent([[1, 22], [W - 1, H - 4]])({ nodes, links });
    } catch (err) {
      replace(svgWrap, emptyNote(`cannot lay out the graph: ${err.message}`));
      ready(el);
      return;
    }
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "attribution Sankey" });
    svg.append(s("defs", {}, s("pattern", { id: hatchId, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      s("rect", { width: 6, height: 6, fill: "#bdbdbd" }), s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#757575", "stroke-width": 2.5 }))));
    // layer names over their columns
    const colX = new Map();
    for (const n of graph.nodes) colX.set(n.col, n.x0);
    layers.forEach((l, i) => {
      if (!colX.has(i)) return;
      const x = colX.get(i);
      const anchor = i === 0 ? "start" : i === layers.length - 1 ? "end" : "middle";
      svg.append(s("text", { class: "slw-layer-name", x: anchor === "end" ? x + 14 : anchor === "middle" ? x + 7 : x, y: 12, "text-anchor": anchor }, l));
    });
    const path = sankeyLinkHorizontal();
    const gl = s("g");
    for (const l of graph.links) {
      const p = s("path", { class: "slw-link", d: path(l), stroke: color(l.source), "stroke-width": Math.max(1, l.width) });
      p.addEventListener("mousemove", (e) => {
        const b = svgWrap.getBoundingClientRect();
        tip.show(e.clientX - b.left, e.clientY - b.top, h("div", { text: `${l.source.label} → ${l.target.label}` }), h("div", { class: "slw-sub", text: `relevance flow ${fmt(l.signed_weight ?? l.value)}` }));
      });
      p.addEventListener("mouseleave", () => tip.hide());
      gl.append(p);
    }
    svg.append(gl);
    const open = model.get("open_node");
    for (const n of graph.nodes) {
      const g = s("g", { class: `slw-node${n.id === open ? " slw-open" : ""}`, "data-testid": "slw-sankey-node", "data-id": n.id, tabindex: 0 });
      const hgt = Math.max(2, n.y1 - n.y0);
      g.append(s("rect", { x: n.x0, y: n.y0, width: n.x1 - n.x0, height: hgt, fill: n.labelled ? color(n) : `url(#${hatchId})`, rx: 2 }));
      const right = n.col < layers.length - 1;
      const name = `${n.labelled ? n.label : "(unlabelled)"} · ${n.components.length}`;
      g.append(s("text", { class: n.labelled ? "" : "slw-unl", x: right ? n.x1 + 5 : n.x0 - 5, y: (n.y0 + n.y1) / 2, dy: "0.35em", "text-anchor": right ? "start" : "end" }, name));
      const onOpen = () => chan.send({ type: "open_node", id: n.id === model.get("open_node") ? "" : n.id });
      g.addEventListener("click", onOpen);
      g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onOpen(); } });
      g.addEventListener("mousemove", (e) => {
        const b = svgWrap.getBoundingClientRect();
        tip.show(e.clientX - b.left, e.clientY - b.top,
          h("div", { text: n.labelled ? n.label : "(unlabelled) components without a known concept" }),
          h("div", { class: "slw-sub", text: `${n.layer} · ${n.components.length} components · relevance ${fmt(n.relevance)}` }),
          h("div", { class: "slw-hint", text: "click to open its gallery" }));
      });
      g.addEventListener("mouseleave", () => tip.hide());
      svg.append(g);
    }
    replace(svgWrap, svg, tip.el);
    drawPanel();
    ready(el);
  };

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
  let lastW = 0;
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => {
    const w = Math.round(svgWrap.getBoundingClientRect().width);
    if (w > 0 && Math.abs(w - lastW) > 8) { lastW = w; draw(); }
  }) : null;
  ro?.observe(svgWrap);
  const offs = [watch(model, ["nodes", "edges", "layers", "targets", "target"], draw), watch(model, ["open_node"], draw), watch(model, ["selection"], markSel)];
  return () => {
    offs.forEach((f) => f());
    ro?.disconnect();
    strips.forEach((x) => x.destroy());
    banner.off();
    chan.close();
  };
}

export default { render };
