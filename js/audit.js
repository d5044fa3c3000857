// AuditView: a_valid vs a_spur per component (canvas scatter) sized by relevance and coloured by
// category; editable valid / spurious concept lists (recomputed in Python); the per-category
// summary; the samples behind a spurious component.
import { h, replace, fmt, compName, root } from "./lib/dom.js";
import { channel, errorBanner, watch, select, selection, f32, i32, u8 } from "./lib/model.js";
import { thumbStrip } from "./lib/thumbs.js";
import { themeColors, onThemeChange, CATEGORY_COLORS } from "./lib/theme.js";
import { plainBar, pct, selectBox, setOptions, header, chip, emptyNote, tooltip, ready, niceTicks } from "./lib/ui.js";

/** a bar in the category's colour */
function catBar(frac, color) {
  const bar = plainBar(frac);
  if (color) bar.firstChild.style.background = color;
  return bar;
}

function render({ model, el }) {
  root(el, "audit");
  const chan = channel(model);
  const banner = errorBanner(model);
  const targetSel = selectBox([], model.get("target"), (v) => chan.send({ type: "target", target: Number(v) }), { "aria-label": "audited class" });
  const lists = h("div", { class: "slw-concepts" });
  const canvas = h("canvas", { class: "slw-plot", dataset: { testid: "slw-audit-canvas" } });
  const wrap = h("div", { class: "slw-canvas-wrap", style: { height: "320px" } }, canvas);
  const legend = h("div", { class: "slw-legend" });
  const summary = h("div");
  const samples = h("div", { dataset: { testid: "slw-audit-samples" } });
  const layerEl = h("span", { class: "slw-sub" });
  el.append(header("Audit", layerEl, h("span", { class: "slw-sub", text: "class" }), targetSel), banner.el, lists,
    h("div", { class: "slw-body" }, h("div", {}, wrap, legend), h("div", {}, summary, samples)));
  const tip = tooltip(wrap);
  let theme = themeColors(el);
  let pts = null;
  let W = 0, H = 0, dpr = 1;
  let strip = null;

  const editList = (kind) => {
    const items = model.get(kind);
    const input = h("input", { type: "text", placeholder: `add a ${kind} concept`, "aria-label": `add a ${kind} concept` });
    const send = (valid, spurious) => chan.send({ type: "set_concepts", valid, spurious });
    const add = () => {
      const v = input.value.trim();
      if (!v) return;
      const next = [...items, v];
      kind === "valid" ? send(next, model.get("spurious")) : send(model.get("valid"), next);
    };
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") add(); });
    return h("div", { class: "slw-concept-row" },
      h("span", { class: "slw-sub", style: { width: "64px" }, text: `${kind}:` }),
      items.map((c, i) => h("span", { class: "slw-chip", style: { borderLeft: `3px solid ${CATEGORY_COLORS[kind === "valid" ? "valid" : "spurious"]}` } },
        h("span", { text: c, title: c }),
        h("button", { text: "×", title: `remove ${c}`, on: { click: () => {
          const next = items.filter((_, j) => j !== i);
          kind === "valid" ? send(next, model.get("spurious")) : send(model.get("valid"), next);
        } } }))),
      input, h("button", { text: "add", on: { click: add } }));
  };

  const load = () => {
    const n = model.get("n");
    pts = { n, comps: i32(model.get("components")), av: f32(model.get("a_valid")), as: f32(model.get("a_spur")),
      rel: f32(model.get("relevance")), cat: u8(model.get("category")), bv: u8(model.get("best_valid")), bs: u8(model.get("best_spur")) };
    let lo = Infinity, hi = -Infinity, rmax = 0;
    for (let i = 0; i < n; i++) { lo = Math.min(lo, pts.av[i], pts.as[i]); hi = Math.max(hi, pts.av[i], pts.as[i]); rmax = Math.max(rmax, Math.abs(pts.rel[i])); }
    if (!(hi > lo)) { lo = -0.1; hi = 0.5; }
    const pad = (hi - lo) * 0.06;
    pts.lo = lo - pad; pts.hi = hi + pad; pts.rmax = rmax || 1;
    replace(lists, editList("valid"), editList("spurious"));
    setOptions(targetSel, model.get("targets").map(([i, name]) => [i, `${i}: ${name}`]), model.get("target"));
    layerEl.textContent = model.get("layer");
    const cats = model.get("categories");
    replace(legend, cats.map((c) => h("span", { class: "slw-legend-item" }, h("span", { class: "slw-swatch", style: { background: CATEGORY_COLORS[c] || "#999" } }), h("span", { text: c }))),
      h("span", { class: "slw-hint", text: "size: |relevance| for the class · dashed: the empty-prompt baseline (0)" }));
    const rows = model.get("summary") || [];
    replace(summary, rows.length ? h("table", { class: "slw-table" },
      h("tr", {}, h("th", { text: "category" }), h("th", { text: "n" }), h("th", { text: "relevance share" })),
      rows.map((r) => h("tr", {}, h("td", {}, h("span", { class: "slw-swatch", style: { background: CATEGORY_COLORS[r.category] || "#999", display: "inline-block", marginRight: "5px" } }), r.category),
        h("td", { text: r.n_components }),
        h("td", { title: `${pct(r.share ?? 0)} of the class's positive relevance in ${model.get("layer")}` },
          h("div", { class: "slw-share" }, catBar(r.share ?? 0, CATEGORY_COLORS[r.category]), h("span", { class: "slw-num", text: pct(r.share ?? 0) }))))))
      : emptyNote("add valid or spurious concepts to audit this class"));
    drawSamples();
    schedule();
  };

  // plot area inside margins for the tick values and axis titles; one scale for both axes
  const M = { left: 50, right: 12, top: 12, bottom: 40 };
  const px = (v) => M.left + ((v - pts.lo) / (pts.hi - pts.lo)) * (W - M.left - M.right);
  const py = (v) => H - M.bottom - ((v - pts.lo) / (pts.hi - pts.lo)) * (H - M.top - M.bottom);
  const radius = (i) => 2.5 + 9 * Math.sqrt(Math.abs(pts.rel[i]) / pts.rmax);
  let frame = 0;
  const schedule = () => { if (!frame) frame = requestAnimationFrame(draw); };
  function draw() {
    frame = 0;
    if (!W || !pts) return;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = theme.bg; ctx.fillRect(0, 0, W, H);
    const cats = model.get("categories");
    drawAxes(ctx, cats);
    const sel = selection(model);
    const order = Array.from({ length: pts.n }, (_, i) => i).sort((a, b) => Math.abs(pts.rel[b]) - Math.abs(pts.rel[a]));
    for (const i of order) {
      ctx.fillStyle = CATEGORY_COLORS[cats[pts.cat[i]]] || "#999";
      ctx.globalAlpha = 0.8;
      ctx.beginPath(); ctx.arc(px(pts.av[i]), py(pts.as[i]), radius(i), 0, 2 * Math.PI); ctx.fill();
      ctx.globalAlpha = 1;
      if (sel && sel.layer === model.get("layer") && sel.component === pts.comps[i]) {
        ctx.strokeStyle = theme.accent; ctx.lineWidth = 2;
        ctx.beginPath(); ctx.arc(px(pts.av[i]), py(pts.as[i]), radius(i) + 4, 0, 2 * Math.PI); ctx.stroke();
      }
    }
    ready(el);
  }
  // axes: tick values on both, titles, the zero lines (the empty-prompt baseline: tau = 0) and
  // the four quadrants named by the category a component there gets
  function drawAxes(ctx, cats) {
    const ticks = niceTicks(pts.lo, pts.hi, Math.max(4, Math.round((W - M.left) / 80)));
    const yticks = niceTicks(pts.lo, pts.hi, Math.max(4, Math.round((H - M.bottom) / 50)));
    const x0 = px(pts.lo), x1 = px(pts.hi), y0 = py(pts.lo), y1 = py(pts.hi);
    ctx.font = `11px ${theme.font}`;
    ctx.lineWidth = 1;
    ctx.strokeStyle = theme.border;
    ctx.fillStyle = theme.fg2;
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const v of ticks) {
      const x = Math.round(px(v)) + 0.5;
      ctx.globalAlpha = 0.5; ctx.beginPath(); ctx.moveTo(x, y1); ctx.lineTo(x, y0); ctx.stroke(); ctx.globalAlpha = 1;
      ctx.beginPath(); ctx.moveTo(x, y0); ctx.lineTo(x, y0 + 4); ctx.stroke();
      ctx.fillText(fmt(v, 1), x, y0 + 6);
    }
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const v of yticks) {
      const y = Math.round(py(v)) + 0.5;
      ctx.globalAlpha = 0.5; ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke(); ctx.globalAlpha = 1;
      ctx.beginPath(); ctx.moveTo(x0 - 4, y); ctx.lineTo(x0, y); ctx.stroke();
      ctx.fillText(fmt(v, 1), x0 - 6, y);
    }
    ctx.strokeStyle = theme.fg3;
    ctx.beginPath(); ctx.moveTo(x0, y0 + 0.5); ctx.lineTo(x1, y0 + 0.5); ctx.moveTo(x0 - 0.5, y0); ctx.lineTo(x0 - 0.5, y1); ctx.stroke();
    if (pts.lo < 0 && pts.hi > 0) {
      ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(px(0), y0); ctx.lineTo(px(0), y1); ctx.moveTo(x0, py(0)); ctx.lineTo(x1, py(0)); ctx.stroke();
      ctx.setLineDash([]);
      const q = [["spurious", x0 + 6, y1 + 4, "left", "top"], ["both", x1 - 6, y1 + 4, "right", "top"],
        ["valid", x1 - 6, py(0) + 6, "right", "top"], ["unexpected", x0 + 6, y0 - 6, "left", "bottom"]];
      ctx.font = `600 11px ${theme.font}`;
      for (const [name, x, y, align, base] of q) {
        if (!cats.includes(name)) continue;
        ctx.fillStyle = CATEGORY_COLORS[name] || theme.fg3; ctx.globalAlpha = 0.9;
        ctx.textAlign = align; ctx.textBaseline = base; ctx.fillText(name, x, y);
      }
      ctx.globalAlpha = 1;
    }
    ctx.fillStyle = theme.fg2; ctx.font = `12px ${theme.font}`;
    ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    ctx.fillText("a_valid  (best valid concept − empty prompt)", (x0 + x1) / 2, H - 2);
    ctx.save(); ctx.translate(12, (y0 + y1) / 2); ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle"; ctx.fillText("a_spur  (spurious − empty prompt)", 0, 0); ctx.restore();
    ctx.textAlign = "start"; ctx.textBaseline = "alphabetic";
    canvas.dataset.xticks = ticks.join(",");
    canvas.dataset.yticks = yticks.join(",");
  }

  const resize = () => {
    const b = wrap.getBoundingClientRect();
    if (b.width < 2) return;
    W = Math.round(b.width); H = Math.round(b.height); dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    schedule();
  };
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(resize) : null;
  ro?.observe(wrap);

  const hit = (e) => {
    if (!pts) return -1;
    const b = canvas.getBoundingClientRect();
    const x = e.clientX - b.left, y = e.clientY - b.top;
    let best = -1, bd = Infinity;
    for (let i = 0; i < pts.n; i++) {
      const d = Math.hypot(px(pts.av[i]) - x, py(pts.as[i]) - y);
      if (d <= radius(i) + 3 && d < bd) { bd = d; best = i; }
    }
    return best;
  };
  canvas.addEventListener("mousemove", (e) => {
    const i = hit(e);
    canvas.style.cursor = i >= 0 ? "pointer" : "default";
    if (i < 0) return tip.hide();
    const b = wrap.getBoundingClientRect();
    const valid = model.get("valid"), spur = model.get("spurious"), cats = model.get("categories");
    tip.show(e.clientX - b.left, e.clientY - b.top,
      h("div", { class: "slw-mono", text: compName(model.get("layer"), pts.comps[i]) }),
      h("div", { text: `category: ${cats[pts.cat[i]]}` }),
      h("div", { class: "slw-sub", text: `a_valid ${fmt(pts.av[i])}${valid[pts.bv[i]] !== undefined ? ` (${valid[pts.bv[i]]})` : ""}` }),
      h("div", { class: "slw-sub", text: `a_spur ${fmt(pts.as[i])}${spur[pts.bs[i]] !== undefined ? ` (${spur[pts.bs[i]]})` : ""}` }),
      h("div", { class: "slw-sub", text: `relevance ${fmt(pts.rel[i])}` }));
  });
  canvas.addEventListener("mouseleave", () => tip.hide());
  canvas.addEventListener("click", (e) => { const i = hit(e); if (i >= 0) select(model, model.get("layer"), pts.comps[i]); });

  const drawSamples = () => {
    strip?.destroy();
    strip = null;
    const sel = selection(model);
    const spurious = model.get("spurious_components") || [];
    if (!sel || sel.layer !== model.get("layer") || !spurious.includes(sel.component)) {
      replace(samples, spurious.length ? h("div", { class: "slw-hint", style: { marginTop: "8px" }, text: `click a spurious component to see its samples (${spurious.length} spurious)` }) : null);
      return;
    }
    strip = thumbStrip(chan, sel.layer, sel.component, 12, { size: 64, kind: "samples", cls: "slw-grid", title: (i, m) => `sample #${m.indices?.[i]}` });
    strip.style.setProperty("--slw-thumb", "56px");
    replace(samples, h("div", { class: "slw-sub", style: { margin: "8px 0 4px" }, text: `samples behind ${compName(sel.layer, sel.component)} (the data to inspect or clean)` }), strip);
  };

  resize();
  load();
  const offTheme = onThemeChange(() => { theme = themeColors(el); schedule(); });
  const offs = [watch(model, ["n", "a_valid", "a_spur", "relevance", "category", "summary", "valid", "spurious", "targets", "target", "spurious_components"], load),
    watch(model, ["selection"], () => { drawSamples(); schedule(); })];
  return () => {
    offs.forEach((f) => f());
    offTheme();
    ro?.disconnect();
    strip?.destroy();
    banner.off();
    chan.close();
  };
}

export default { render };
