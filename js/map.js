// SemanticMap: one point per component on a 2-D canvas (no DOM node per point). Pan (drag), zoom
// (wheel), box and lasso selection, hover tooltips with thumbnails, colour by layer / label /
// score / relevance / audit category, size by relevance. Smooth with 50,000 points.
import { h, replace, fmt, compName, root } from "./lib/dom.js";
import { channel, errorBanner, watch, select, selection, f32, i32, u16 } from "./lib/model.js";
import { decodeThumbs } from "./lib/thumbs.js";
import { themeColors, onThemeChange, categorical, viridis, rgb, CATEGORY_COLORS } from "./lib/theme.js";
import { selectBox, header, chip, tooltip, ready } from "./lib/ui.js";

const MODES = [["layer", "colour: layer"], ["label", "colour: label"], ["score", "colour: search score"], ["relevance", "colour: relevance"], ["category", "colour: audit category"]];
const SIZES = [["none", "size: uniform"], ["relevance", "size: relevance"]];
const GREY = [150, 150, 150];
const LEVELS = 48; // colour buckets of the continuous modes

function pointInPolygon(x, y, poly) {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i];
    const [xj, yj] = poly[j];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function render({ model, el }) {
  root(el, "map");
  const chan = channel(model);
  const banner = errorBanner(model);
  const colorSel = selectBox(MODES, model.get("color_by"), (v) => chan.send({ type: "color", color_by: v }));
  const sizeSel = selectBox(SIZES, model.get("size_by"), (v) => chan.send({ type: "color", size_by: v }));
  const toolBtns = { pan: h("button", { text: "pan", title: "drag to pan, wheel to zoom, double-click to reset" }), box: h("button", { text: "box", title: "drag a rectangle to select" }), lasso: h("button", { text: "lasso", title: "draw a free shape to select" }) };
  const canvas = h("canvas", { class: "slw-plot", dataset: { testid: "slw-map-canvas" } });
  const wrap = h("div", { class: "slw-canvas-wrap", style: { height: "380px" } }, canvas);
  const note = h("div", { class: "slw-hint" });
  const legend = h("div", { class: "slw-legend" });
  const count = h("span", { class: "slw-sub" });
  const selHead = h("div", { class: "slw-sub" });
  const selList = h("div", { class: "slw-list slw-sel-list", dataset: { testid: "slw-map-selected" } });
  el.append(
    header("Semantic map", count, h("span", { class: "slw-spacer" }), colorSel, sizeSel, h("span", { class: "slw-seg" }, ...Object.values(toolBtns))),
    banner.el,
    h("div", { class: "slw-body" }, h("div", {}, wrap, legend, note), h("div", {}, selHead, selList)),
  );
  const tip = tooltip(wrap);
  let tool = "pan";
  const setTool = (t) => {
    tool = t;
    for (const [k, b] of Object.entries(toolBtns)) b.classList.toggle("slw-on", k === t);
    canvas.style.cursor = t === "pan" ? "grab" : "crosshair";
  };
  for (const [k, b] of Object.entries(toolBtns)) b.addEventListener("click", () => setTool(k));
  setTool("pan");

  // ---- data
  let n = 0, xy = new Float32Array(0), comps = new Int32Array(0), lcodes = new Uint16Array(0);
  let layers = [], labelCodes = new Uint16Array(0), labelNames = [];
  let colorIdx = new Uint16Array(0), palette = [], order = [], sizes = null, groups = [];
  let bounds = [0, 1, 0, 1];
  let grid = null; // spatial index: cell -> point indices
  let selected = new Set(); // box/lasso selection (point indices)
  let theme = themeColors(el);
  let view = { k: 1, tx: 0, ty: 0 };
  let W = 0, H = 0, dpr = 1;

  const loadPoints = () => {
    n = model.get("n");
    xy = f32(model.get("xy"));
    comps = i32(model.get("components"));
    lcodes = u16(model.get("layer_codes"));
    layers = model.get("layers");
    labelCodes = u16(model.get("label_codes"));
    labelNames = model.get("label_names");
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = xy[2 * i], y = xy[2 * i + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
    if (!(y1 > y0)) { y0 -= 1; y1 += 1; }
    bounds = [x0, x1, y0, y1];
    // uniform grid index for hover / click
    const G = Math.max(1, Math.ceil(Math.sqrt(n / 4)));
    const cells = Array.from({ length: G * G }, () => []);
    for (let i = 0; i < n; i++) {
      const cx = Math.min(G - 1, Math.floor(((xy[2 * i] - x0) / (x1 - x0)) * G));
      const cy = Math.min(G - 1, Math.floor(((xy[2 * i + 1] - y0) / (y1 - y0)) * G));
      cells[cy * G + cx].push(i);
    }
    grid = { G, cells };
    selected = new Set();
    drawSelected();
    count.textContent = `${n.toLocaleString()} components · ${layers.length > 1 ? `${layers.length} layers` : layers[0] || ""}`;
    resetView();
    loadColors();
  };

  const loadColors = () => {
    const mode = model.get("color_by");
    const values = f32(model.get("color_values"));
    const codes = u16(model.get("color_codes"));
    const names = model.get("color_names");
    colorIdx = new Uint16Array(n);
    palette = [];
    replace(legend);
    if (values.length === n && n) {
      let lo = Infinity, hi = -Infinity;
      for (const v of values) if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
      if (!(hi > lo)) hi = lo + 1e-9;
      palette = Array.from({ length: LEVELS }, (_, i) => viridis(i / (LEVELS - 1)));
      palette.push(GREY);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        colorIdx[i] = Number.isFinite(v) ? Math.round(((v - lo) / (hi - lo)) * (LEVELS - 1)) : LEVELS;
      }
      const ramp = h("canvas", { class: "slw-ramp", width: 120, height: 10 });
      const rc = ramp.getContext("2d");
      for (let x = 0; x < 120; x++) { rc.fillStyle = rgb(viridis(x / 119)); rc.fillRect(x, 0, 1, 10); }
      const what = mode === "score" ? `score for “${model.get("query")}”` : `relevance for ${model.get("target_name") || `class ${model.get("target")}`}`;
      replace(legend, h("span", { class: "slw-legend-item", text: what }), h("span", { text: fmt(lo) }), ramp, h("span", { text: fmt(hi) }));
    } else if (codes.length === n && n) {
      palette = names.map((name, i) => {
        if (mode === "category") return parseHex(CATEGORY_COLORS[name] || "#999999");
        if (mode === "label" && i === 0) return GREY;
        return parseHex(categorical(mode === "label" ? i - 1 : i));
      });
      const counts = new Array(names.length).fill(0);
      for (let i = 0; i < n; i++) { colorIdx[i] = codes[i] < palette.length ? codes[i] : 0; counts[colorIdx[i]]++; }
      const items = names.map((name, i) => [name, i]).filter(([, i]) => counts[i] > 0).slice(0, 40);
      replace(legend, items.map(([name, i]) => h("span", { class: "slw-legend-item", title: `${name}: ${counts[i]} components` },
        h("span", { class: "slw-swatch", style: { background: rgb(palette[i]) } }), h("span", { text: `${name} (${counts[i]})` }))));
    } else {
      palette = [parseHex(categorical(0))];
    }
    note.textContent = model.get("color_note") || "";
    // draw order: grey / low values first so that the interesting points stay on top
    groups = Array.from({ length: palette.length }, () => []);
    for (let i = 0; i < n; i++) groups[colorIdx[i]]?.push(i);
    const greyIdx = palette.indexOf(GREY);
    order = Array.from({ length: palette.length }, (_, i) => i).sort((a, b) => (a === greyIdx ? -1 : b === greyIdx ? 1 : a - b));
    const sv = f32(model.get("size_values"));
    sizes = sv.length === n ? sv : null;
    colorSel.value = mode;
    sizeSel.value = model.get("size_by");
    schedule();
  };

  function parseHex(hex) {
    return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  }

  // ---- view transform (data -> CSS px)
  const resetView = () => {
    if (!W) return;
    const [x0, x1, y0, y1] = bounds;
    const pad = 18;
    const k = Math.min((W - 2 * pad) / (x1 - x0), (H - 2 * pad) / (y1 - y0));
    view = { k: k > 0 ? k : 1, tx: W / 2 - ((x0 + x1) / 2) * k, ty: H / 2 + ((y0 + y1) / 2) * k };
    schedule();
  };
  const sx = (x) => x * view.k + view.tx;
  const sy = (y) => -y * view.k + view.ty;
  const dataX = (px) => (px - view.tx) / view.k;
  const dataY = (py) => -(py - view.ty) / view.k;

  // ---- drawing
  let frame = 0;
  let overlay = null; // box or lasso in CSS px
  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(draw);
  };
  const baseR = () => (n > 20000 ? 1.3 : n > 3000 ? 2 : 3.5);

  // Many points: write pixels straight into an ImageData (one pass, no path building), which
  // keeps 50,000 points at interactive frame rates even on a software-rasterised canvas.
  const discs = new Map();
  const disc = (r) => {
    const key = Math.round(r * 2) / 2;
    if (!discs.has(key)) {
      const off = [];
      const R = Math.ceil(key);
      for (let dy = -R; dy <= R; dy++) for (let dx = -R; dx <= R; dx++) if (dx * dx + dy * dy <= key * key + 0.5) off.push(dx, dy);
      discs.set(key, off);
    }
    return discs.get(key);
  };
  let img = null;
  function drawPixels(ctx, r0, dim) {
    const cw = canvas.width, ch = canvas.height;
    if (!img || img.width !== cw || img.height !== ch) img = ctx.createImageData(cw, ch);
    const px = new Uint32Array(img.data.buffer);
    const bg = parseColorRGB(theme.bg);
    const pack = (c) => (255 << 24) | ((c[2] & 255) << 16) | ((c[1] & 255) << 8) | (c[0] & 255); // little endian RGBA
    px.fill(pack(bg));
    const mix = (c, t) => [c[0] * (1 - t) + bg[0] * t, c[1] * (1 - t) + bg[1] * t, c[2] * (1 - t) + bg[2] * t];
    const cols = palette.map((c) => pack(dim ? mix(c, 0.7) : mix(c, 0.1)));
    const k = view.k * dpr, tx = view.tx * dpr, ty = view.ty * dpr;
    for (const g of order) {
      const idx = groups[g];
      if (!idx || !idx.length) continue;
      const col = cols[g];
      let off = disc(r0 * dpr);
      for (let j = 0; j < idx.length; j++) {
        const i = idx[j];
        const x = Math.round(xy[2 * i] * k + tx), y = Math.round(-xy[2 * i + 1] * k + ty);
        if (x < -12 || y < -12 || x >= cw + 12 || y >= ch + 12) continue;
        if (sizes) off = disc((r0 + 6 * sizes[i]) * dpr);
        for (let o = 0; o < off.length; o += 2) {
          const xx = x + off[o], yy = y + off[o + 1];
          if (xx >= 0 && yy >= 0 && xx < cw && yy < ch) px[yy * cw + xx] = col;
        }
      }
    }
    ctx.putImageData(img, 0, 0);
  }
  function parseColorRGB(c) {
    if (c.startsWith("#") && c.length === 7) return parseHex(c);
    const m = /rgba?\(([^)]+)\)/.exec(c);
    if (m) return m[1].split(/[ ,/]+/).slice(0, 3).map(Number);
    const probe = document.createElement("canvas").getContext("2d");
    probe.fillStyle = c;
    const v = probe.fillStyle;
    return v.startsWith("#") ? parseHex(v) : [255, 255, 255];
  }

  function draw() {
    frame = 0;
    if (!W) return;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const r0 = baseR();
    const dim = selected.size > 0;
    if (n > 3000) {
      drawPixels(ctx, r0, dim);
    } else {
      ctx.fillStyle = theme.bg;
      ctx.fillRect(0, 0, W, H);
      for (const g of order) {
        const idx = groups[g];
        if (!idx || !idx.length) continue;
        ctx.fillStyle = rgb(palette[g], dim ? 0.25 : 0.85);
        ctx.beginPath();
        for (const i of idx) {
          const x = sx(xy[2 * i]), y = sy(xy[2 * i + 1]);
          if (x < -10 || y < -10 || x > W + 10 || y > H + 10) continue;
          const r = sizes ? r0 + 6 * sizes[i] : r0;
          ctx.moveTo(x + r, y);
          ctx.arc(x, y, r, 0, 2 * Math.PI);
        }
        ctx.fill();
      }
    }
    if (dim) {
      for (const i of selected) {
        ctx.fillStyle = rgb(palette[colorIdx[i]]);
        const x = sx(xy[2 * i]), y = sy(xy[2 * i + 1]);
        const r = (sizes ? r0 + 6 * sizes[i] : r0) + 0.5;
        ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill();
      }
    }
    const sel = selection(model);
    if (sel) {
      const li = layers.indexOf(sel.layer);
      for (let i = 0; i < n; i++) {
        if (comps[i] !== sel.component || lcodes[i] !== li) continue;
        const x = sx(xy[2 * i]), y = sy(xy[2 * i + 1]);
        ctx.strokeStyle = theme.bg; ctx.lineWidth = 4;
        ctx.beginPath(); ctx.arc(x, y, 8, 0, 2 * Math.PI); ctx.stroke();
        ctx.strokeStyle = theme.accent; ctx.lineWidth = 2;
        ctx.beginPath(); ctx.arc(x, y, 8, 0, 2 * Math.PI); ctx.stroke();
      }
    }
    if (overlay) {
      ctx.strokeStyle = theme.accent;
      ctx.fillStyle = rgb([25, 118, 210], 0.1);
      ctx.lineWidth = 1;
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      if (overlay.box) {
        const [a, b] = overlay.box;
        ctx.rect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
      } else overlay.lasso.forEach(([x, y], j) => (j ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ready(el);
  }

  // ---- size
  const resize = () => {
    const box = wrap.getBoundingClientRect();
    if (box.width < 2 || box.height < 2) return; // not attached yet: the ResizeObserver calls again
    const w = Math.round(box.width), hh = Math.round(box.height);
    const first = W === 0;
    if (w === W && hh === H && window.devicePixelRatio === dpr) return;
    const oldW = W, oldH = H;
    W = w; H = hh; dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    if (first) resetView();
    else { view.tx += (W - oldW) / 2; view.ty += (H - oldH) / 2; }
    schedule();
  };
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(resize) : null;
  ro?.observe(wrap);

  // ---- picking
  const nearest = (px, py, radius = 8) => {
    if (!grid || !n) return -1;
    const [x0, x1, y0, y1] = bounds;
    const { G, cells } = grid;
    const dx = dataX(px), dy = dataY(py), rd = radius / view.k;
    const cx0 = Math.max(0, Math.floor(((dx - rd - x0) / (x1 - x0)) * G)), cx1 = Math.min(G - 1, Math.floor(((dx + rd - x0) / (x1 - x0)) * G));
    const cy0 = Math.max(0, Math.floor(((dy - rd - y0) / (y1 - y0)) * G)), cy1 = Math.min(G - 1, Math.floor(((dy + rd - y0) / (y1 - y0)) * G));
    let best = -1, bd = Infinity;
    for (let cy = cy0; cy <= cy1; cy++) for (let cx = cx0; cx <= cx1; cx++) {
      for (const i of cells[cy * G + cx]) {
        const ex = sx(xy[2 * i]) - px, ey = sy(xy[2 * i + 1]) - py, d = ex * ex + ey * ey;
        if (d < bd) { bd = d; best = i; }
      }
    }
    return bd <= radius * radius ? best : -1;
  };

  const thumbCache = new Map();
  const urls = [];
  let hoverI = -1;
  const showTip = (i, px, py) => {
    const layer = layers[lcodes[i]];
    const c = comps[i];
    const lab = labelNames[labelCodes[i]];
    const values = f32(model.get("color_values"));
    const mode = model.get("color_by");
    const strip = h("div", { class: "slw-strip" });
    tip.show(px, py,
      h("div", { class: "slw-mono", text: compName(layer, c) }),
      lab && labelCodes[i] !== 0 ? chip(lab, { cls: "slw-accent" }) : chip("no label", { cls: "slw-none" }),
      values.length === n && (mode === "score" || mode === "relevance") ? h("div", { class: "slw-sub", text: `${mode}: ${fmt(values[i])}` }) : null,
      mode === "category" ? h("div", { class: "slw-sub", text: `category: ${model.get("color_names")[u16(model.get("color_codes"))[i]] ?? "–"}` }) : null,
      strip);
    const key = `${layer}/${c}`;
    const fill = (imgs) => { if (hoverI === i) { strip.replaceChildren(...imgs.map((im) => h("div", { class: "slw-thumb", style: { width: "48px", height: "48px" } }, im.cloneNode ? cloneCanvas(im) : im))); tip.show(px, py, ...tip.el.childNodes); } };
    if (thumbCache.has(key)) fill(thumbCache.get(key));
    else {
      thumbCache.set(key, []);
      chan.request({ type: "thumbs", layer, component: c, start: 0, count: 4, size: 48, kind: "crops", format: "raw" })
        .then(({ msg, buffers }) => { const imgs = decodeThumbs(msg, buffers, urls); thumbCache.set(key, imgs); fill(imgs); })
        .catch(() => thumbCache.delete(key));
    }
  };
  function cloneCanvas(c) {
    if (!(c instanceof HTMLCanvasElement)) return c.cloneNode();
    const d = h("canvas", { class: c.className, width: c.width, height: c.height });
    d.getContext("2d").drawImage(c, 0, 0);
    return d;
  }

  // ---- interaction
  let drag = null;
  const pos = (e) => { const b = canvas.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; };
  canvas.addEventListener("pointerdown", (e) => {
    const p = pos(e);
    canvas.setPointerCapture(e.pointerId);
    drag = { start: p, last: p, moved: false, tool: e.shiftKey ? "box" : tool };
    if (drag.tool === "lasso") overlay = { lasso: [p] };
    if (drag.tool === "pan") canvas.style.cursor = "grabbing";
    tip.hide();
  });
  canvas.addEventListener("pointermove", (e) => {
    const p = pos(e);
    if (!drag) {
      const i = nearest(p[0], p[1]);
      if (i !== hoverI) { hoverI = i; if (i < 0) tip.hide(); }
      if (i >= 0) showTip(i, p[0], p[1]);
      canvas.style.cursor = i >= 0 ? "pointer" : tool === "pan" ? "grab" : "crosshair";
      return;
    }
    if (Math.hypot(p[0] - drag.start[0], p[1] - drag.start[1]) > 3) drag.moved = true;
    if (drag.tool === "pan") { view.tx += p[0] - drag.last[0]; view.ty += p[1] - drag.last[1]; }
    else if (drag.tool === "box") overlay = { box: [drag.start, p] };
    else overlay.lasso.push(p);
    drag.last = p;
    schedule();
  });
  const finish = (e) => {
    if (!drag) return;
    const d = drag;
    drag = null;
    canvas.style.cursor = tool === "pan" ? "grab" : "crosshair";
    if (!d.moved) {
      overlay = null;
      const i = nearest(d.start[0], d.start[1]);
      if (i >= 0) select(model, layers[lcodes[i]], comps[i]);
      else if (selected.size) { selected = new Set(); sendSelected(); }
      schedule();
      return;
    }
    if (d.tool !== "pan" && overlay) {
      const hit = new Set();
      if (overlay.box) {
        const [a, b] = overlay.box;
        const xa = Math.min(a[0], b[0]), xb = Math.max(a[0], b[0]), ya = Math.min(a[1], b[1]), yb = Math.max(a[1], b[1]);
        for (let i = 0; i < n; i++) { const x = sx(xy[2 * i]), y = sy(xy[2 * i + 1]); if (x >= xa && x <= xb && y >= ya && y <= yb) hit.add(i); }
      } else {
        const poly = overlay.lasso;
        let bx0 = Infinity, bx1 = -Infinity, by0 = Infinity, by1 = -Infinity;
        for (const [x, y] of poly) { bx0 = Math.min(bx0, x); bx1 = Math.max(bx1, x); by0 = Math.min(by0, y); by1 = Math.max(by1, y); }
        for (let i = 0; i < n; i++) {
          const x = sx(xy[2 * i]), y = sy(xy[2 * i + 1]);
          if (x >= bx0 && x <= bx1 && y >= by0 && y <= by1 && pointInPolygon(x, y, poly)) hit.add(i);
        }
      }
      selected = hit;
      overlay = null;
      sendSelected();
    }
    schedule();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  canvas.addEventListener("pointerleave", () => { if (!drag) { hoverI = -1; tip.hide(); } });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [px, py] = pos(e);
    const f = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
    view.tx = px - (px - view.tx) * f;
    view.ty = py - (py - view.ty) * f;
    view.k *= f;
    tip.hide();
    schedule();
  }, { passive: false });
  canvas.addEventListener("dblclick", resetView);

  function sendSelected() {
    const idx = Int32Array.from(selected);
    model.send({ type: "select_many" }, undefined, [idx.buffer]);
    drawSelected();
  }
  function drawSelected() {
    const idx = Array.from(selected);
    selHead.textContent = idx.length ? `${idx.length} selected` : "box / lasso (or shift-drag) to select";
    const rows = idx.slice(0, 300).map((i) => {
      const layer = layers[lcodes[i]], lab = labelCodes[i] ? labelNames[labelCodes[i]] : null;
      return h("div", { class: "slw-row", title: "select in every view", on: { click: () => select(model, layer, comps[i]) } },
        h("span", {}, h("span", { class: "slw-mono", text: `${compName(layer, comps[i])} ` }), lab ? h("span", { class: "slw-sub", text: lab }) : null));
    });
    if (idx.length > 300) rows.push(h("div", { class: "slw-sub", text: `… ${idx.length - 300} more (widget.selected in Python)` }));
    replace(selList, rows);
  }

  resize();
  loadPoints();
  const offTheme = onThemeChange(() => { theme = themeColors(el); schedule(); });
  const offs = [
    watch(model, ["xy", "n", "layers", "label_codes"], loadPoints),
    watch(model, ["color_values", "color_codes", "color_names", "color_note", "size_values", "color_by", "size_by"], loadColors),
    watch(model, ["selection"], schedule),
  ];
  return () => {
    offs.forEach((f) => f());
    offTheme();
    ro?.disconnect();
    banner.off();
    urls.forEach((u) => URL.revokeObjectURL(u));
    chan.close();
  };
}

export default { render };
