// SemanticMap: one point per component on a 2-D canvas (no DOM node per point). Pan (drag), zoom
// (wheel), box and lasso selection, hover tooltips with thumbnails, colour by layer / label /
// score / relevance / audit category, size by relevance. Smooth with 50,000 points.
// The view fits the bulk of the points (Tukey's far fences per axis; "fit all" shows outliers
// too), every shown category gets its own colour (the smallest beyond the palette share a
// neutral "other"), and category names are written where their points cluster, never over
// each other. Clicking a legend entry highlights its points.
import { h, replace, fmt, compName, root } from "./lib/dom.js";
import { channel, errorBanner, watch, select, selection, f32, i32, u16 } from "./lib/model.js";
import { decodeThumbs } from "./lib/thumbs.js";
import { themeColors, onThemeChange, assignColors, viridis, rgb, CATEGORY_COLORS, UNLABELLED_COLOR, OTHER_COLOR } from "./lib/theme.js";
import { selectBox, header, chip, tooltip, ready } from "./lib/ui.js";

const MODES = [["layer", "colour: layer"], ["label", "colour: label"], ["score", "colour: search score"], ["relevance", "colour: relevance"], ["category", "colour: audit category"], ["auc", "colour: label AUC"]];
const SIZES = [["none", "size: uniform"], ["relevance", "size: relevance"]];
const GREY = [150, 150, 150];
const LEVELS = 48; // colour buckets of the continuous modes
const FENCE = 3; // Tukey's far fences: q1 - 3 IQR .. q3 + 3 IQR is "the bulk" of an axis
const rgbKey = (c) => c.join(",");
const hexKey = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(",");
const UNLABELLED_KEY = hexKey(UNLABELLED_COLOR);
const OTHER_KEY = hexKey(OTHER_COLOR);
const NAME_CELL = 44; // px: neighbourhood in which a category's points count as a cluster

/**
 * Display coordinates of the map: UMAP places clusters that share no neighbours at arbitrary
 * distances (a far island squeezes the rest into a corner), so per axis every empty gap wider
 * than 8 % of the central 90 % of the values is shortened to that width (distances inside a
 * cluster are kept), then the map is rotated (a rigid motion: distances kept) so that its
 * long axis runs along the canvas' long side. xy: Float32Array [n * 2] -> a new one.
 */
function displayCoords(xy, n, wide) {
  const out = new Float32Array(2 * n);
  for (let axis = 0; axis < 2; axis++) {
    const idx = Array.from({ length: n }, (_, i) => i).sort((a, b) => xy[2 * a + axis] - xy[2 * b + axis]);
    const v = (r) => xy[2 * idx[r] + axis];
    const q = (p) => v(Math.min(n - 1, Math.max(0, Math.round((n - 1) * p))));
    const gapMax = 0.08 * ((q(0.95) - q(0.05)) || (v(n - 1) - v(0)) || 1);
    let pos = 0;
    for (let r = 0; r < n; r++) {
      if (r > 0) pos += Math.min(v(r) - v(r - 1), gapMax);
      out[2 * idx[r] + axis] = pos;
    }
  }
  // rotate the principal axis onto x (wide canvas) or y (tall canvas)
  let mx = 0, my = 0;
  for (let i = 0; i < n; i++) { mx += out[2 * i]; my += out[2 * i + 1]; }
  mx /= n || 1; my /= n || 1;
  let sxx = 0, syy = 0, sxy = 0;
  for (let i = 0; i < n; i++) {
    const dx = out[2 * i] - mx, dy = out[2 * i + 1] - my;
    sxx += dx * dx; syy += dy * dy; sxy += dx * dy;
  }
  const theta = 0.5 * Math.atan2(2 * sxy, sxx - syy) + (wide ? 0 : Math.PI / 2);
  const c = Math.cos(-theta), s = Math.sin(-theta);
  for (let i = 0; i < n; i++) {
    const dx = out[2 * i] - mx, dy = out[2 * i + 1] - my;
    out[2 * i] = c * dx - s * dy;
    out[2 * i + 1] = s * dx + c * dy;
  }
  return out;
}

/** [lo, hi] of the values inside Tukey's far fences (all values when the IQR is 0). */
function robustRange(values) {
  const v = Float64Array.from(values).filter(Number.isFinite).sort();
  if (!v.length) return [0, 1];
  const q = (p) => { const x = (v.length - 1) * p, i = Math.floor(x), f = x - i; return i + 1 < v.length ? v[i] * (1 - f) + v[i + 1] * f : v[i]; };
  const q1 = q(0.25), q3 = q(0.75), iqr = q3 - q1;
  if (!(iqr > 0)) return [v[0], v[v.length - 1]];
  const lo = q1 - FENCE * iqr, hi = q3 + FENCE * iqr;
  let a = Infinity, b = -Infinity;
  for (const x of v) if (x >= lo && x <= hi) { if (x < a) a = x; if (x > b) b = x; }
  return [a, b];
}

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
  const resetBtn = h("button", { text: "reset view", title: "fit the bulk of the points (double-click does the same)", dataset: { testid: "slw-map-reset" } });
  const fitAllBtn = h("button", { text: "fit all", title: "fit every point, outliers included" });
  const namesBox = h("input", { type: "checkbox", checked: true, "aria-label": "names on the map" });
  const namesToggle = h("label", { class: "slw-sub slw-check", title: "write category names where their points cluster" }, namesBox, "names");
  const canvas = h("canvas", { class: "slw-plot", dataset: { testid: "slw-map-canvas" } });
  const wrap = h("div", { class: "slw-canvas-wrap", style: { height: "360px" } }, canvas);
  const note = h("div", { class: "slw-hint" });
  const outside = h("div", { class: "slw-hint" });
  const legend = h("div", { class: "slw-legend" });
  const count = h("span", { class: "slw-sub" });
  const selHead = h("div", { class: "slw-sub" });
  const selList = h("div", { class: "slw-list slw-sel-list", dataset: { testid: "slw-map-selected" } });
  const selBox = h("div", { class: "slw-sel-box" }, selHead, selList); // shown once something is selected
  el.append(
    header("Semantic map", count, h("span", { class: "slw-spacer" }), colorSel, sizeSel),
    h("div", { class: "slw-toolbar" }, h("span", { class: "slw-seg", title: "box / lasso (or shift-drag) to select several components" }, ...Object.values(toolBtns)),
      h("span", { class: "slw-seg" }, resetBtn, fitAllBtn), namesToggle, outside),
    banner.el,
    h("div", { class: "slw-body" }, h("div", {}, wrap, legend, note), selBox),
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
  let n = 0, rawXY = new Float32Array(0), xy = new Float32Array(0), comps = new Int32Array(0), lcodes = new Uint16Array(0);
  let layers = [], labelCodes = new Uint16Array(0), labelNames = [];
  let colorIdx = new Uint16Array(0), palette = [], order = [], sizes = null, groups = [];
  let named = []; // category indices whose names may be written on the map
  let focus = -1; // a legend entry clicked: its points stay, the others fade
  let bounds = [0, 1, 0, 1];
  let bulk = [0, 1, 0, 1]; // the robust extents the view fits
  let nOut = 0; // points outside the bulk
  let grid = null; // spatial index: cell -> point indices
  let selected = new Set(); // box/lasso selection (point indices)
  let theme = themeColors(el);
  let view = { k: 1, tx: 0, ty: 0 };
  let W = 0, H = 0, dpr = 1;

  const loadPoints = () => {
    n = model.get("n");
    rawXY = f32(model.get("xy"));
    xy = displayCoords(rawXY, n, !(W && H > W));
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
    const xs = new Float64Array(n), ys = new Float64Array(n);
    for (let i = 0; i < n; i++) { xs[i] = xy[2 * i]; ys[i] = xy[2 * i + 1]; }
    let [bx0, bx1] = robustRange(xs), [by0, by1] = robustRange(ys);
    if (!(bx1 > bx0)) { bx0 = x0; bx1 = x1; }
    if (!(by1 > by0)) { by0 = y0; by1 = y1; }
    bulk = [bx0, bx1, by0, by1];
    nOut = 0;
    for (let i = 0; i < n; i++) if (xs[i] < bx0 || xs[i] > bx1 || ys[i] < by0 || ys[i] > by1) nOut++;
    focus = -1;
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
      const what = mode === "score" ? `score for “${model.get("query")}”`
        : mode === "auc" ? "label AUC (grey: not measured)"
          : `relevance for ${model.get("target_name") || `class ${model.get("target")}`}`;
      const title = mode === "auc" ? "AUC of each component's label, measured by lens.faithfulness (grey: not measured)" : what;
      replace(legend, h("span", { class: "slw-legend-item", text: what, title }), h("span", { text: fmt(lo) }), ramp, h("span", { text: fmt(hi) }));
    } else if (codes.length === n && n) {
      const counts = new Array(names.length).fill(0);
      for (let i = 0; i < n; i++) { colorIdx[i] = codes[i] < names.length ? codes[i] : 0; counts[colorIdx[i]]++; }
      const neutral = mode === "label" ? [0] : []; // "(unlabelled)"
      let other = [];
      if (mode === "category") palette = names.map((name) => parseHex(CATEGORY_COLORS[name] || "#999999"));
      else {
        const got = assignColors(counts, neutral);
        palette = got.colors.map(parseHex);
        other = got.other;
      }
      const otherSet = new Set(other);
      named = names.map((_, i) => i).filter((i) => counts[i] > 0 && !neutral.includes(i) && !otherSet.has(i) && mode !== "category");
      // legend: largest first; the grouped "other" labels and the unlabelled ones last
      const items = names.map((name, i) => i).filter((i) => counts[i] > 0 && !otherSet.has(i) && !neutral.includes(i))
        .sort((a, b) => (mode === "category" ? a - b : counts[b] - counts[a] || a - b));
      const entry = (i, text, title) => h("span", {
        class: `slw-legend-item slw-clickable${focus === i ? " slw-on" : ""}`, title, dataset: { testid: "slw-map-legend-item" },
        on: { click: () => { focus = focus === i ? -1 : i; loadColors(); } },
      }, h("span", { class: "slw-swatch", style: { background: rgb(palette[i]) } }), h("span", { text }));
      const nOther = other.reduce((a, i) => a + counts[i], 0);
      replace(legend,
        items.map((i) => entry(i, `${names[i]} (${counts[i]})`, `${names[i]}: ${counts[i]} components · click to highlight`)),
        other.length ? h("span", { class: "slw-legend-item", title: other.map((i) => `${names[i]} (${counts[i]})`).join(", ") },
          h("span", { class: "slw-swatch", style: { background: rgb(palette[other[0]]) } }),
          h("span", { text: `other: ${other.length} smaller labels (${nOther})` })) : null,
        neutral.filter((i) => counts[i] > 0).map((i) => entry(i, `${names[i]} (${counts[i]})`, `${counts[i]} components carry no concept of the vocabulary`)));
    } else {
      palette = [parseHex(UNLABELLED_COLOR)];
    }
    if (!(codes.length === n && n) || values.length === n) named = [];
    note.textContent = model.get("color_note") || "";
    // draw order: no value / unlabelled / "other" first, then low values or large groups, so
    // that the interesting (high, rare) points stay on top
    groups = Array.from({ length: palette.length }, () => []);
    for (let i = 0; i < n; i++) groups[colorIdx[i]]?.push(i);
    const rank = (g) => (palette[g] === GREY ? -3 : rgbKey(palette[g]) === UNLABELLED_KEY ? -2 : rgbKey(palette[g]) === OTHER_KEY ? -1 : 0);
    const categoricalMode = values.length !== n;
    order = Array.from({ length: palette.length }, (_, i) => i).sort((a, b) =>
      rank(a) - rank(b) || (categoricalMode ? groups[b].length - groups[a].length : a - b));
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
  const fit = (ext) => {
    if (!W) return;
    const [x0, x1, y0, y1] = ext;
    const pad = 22;
    const k = Math.min((W - 2 * pad) / (x1 - x0), (H - 2 * pad) / (y1 - y0));
    view = { k: k > 0 ? k : 1, tx: W / 2 - ((x0 + x1) / 2) * k, ty: H / 2 + ((y0 + y1) / 2) * k };
    schedule();
  };
  const resetView = () => fit(bulk);
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
  const baseR = () => (n > 20000 ? 1.3 : n > 3000 ? 2 : n > 600 ? 3.5 : 4.5);

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
    const cols = palette.map((c, g) => pack(dim || (focus >= 0 && g !== focus) ? mix(c, 0.8) : mix(c, 0.1)));
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
        ctx.fillStyle = rgb(palette[g], dim || (focus >= 0 && g !== focus) ? 0.18 : 0.9);
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
    drawNames(ctx);
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

  // Category names where their points cluster: per category the densest 3x3 block of
  // NAME_CELL-px cells (screen space, so it follows zoom and pan); a name is written when that
  // block holds >= 3 of its points, >= 35 % of those in view, and 2.5 times the share of all
  // points that the block holds (a category spread like everything else has no place of its
  // own); largest clusters first, each at the first of five spots that overlaps no name already
  // written (else not at all).
  function drawNames(ctx) {
    let placed = 0;
    if (namesBox.checked && named.length) {
      const names = model.get("color_names");
      const cands = [];
      const all = new Map();
      let nAll = 0;
      for (let i = 0; i < n; i++) {
        const x = sx(xy[2 * i]), y = sy(xy[2 * i + 1]);
        if (x < 0 || y < 0 || x >= W || y >= H) continue;
        nAll++;
        const key = Math.floor(x / NAME_CELL) * 65536 + Math.floor(y / NAME_CELL);
        all.set(key, (all.get(key) || 0) + 1);
      }
      for (const g of named) {
        if (focus >= 0 && g !== focus) continue;
        const cells = new Map();
        let visible = 0;
        for (const i of groups[g] || []) {
          const x = sx(xy[2 * i]), y = sy(xy[2 * i + 1]);
          if (x < 0 || y < 0 || x >= W || y >= H) continue;
          visible++;
          const key = Math.floor(x / NAME_CELL) * 65536 + Math.floor(y / NAME_CELL);
          const c = cells.get(key) || cells.set(key, { n: 0, x: 0, y: 0 }).get(key);
          c.n++; c.x += x; c.y += y;
        }
        let best = null;
        for (const [key] of cells) {
          const cx = Math.floor(key / 65536), cy = key % 65536;
          const sum = { n: 0, x: 0, y: 0, all: 0 };
          for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) {
            const k = (cx + dx) * 65536 + cy + dy;
            const o = cells.get(k);
            if (o) { sum.n += o.n; sum.x += o.x; sum.y += o.y; }
            sum.all += all.get(k) || 0;
          }
          if (!best || sum.n > best.n) best = sum;
        }
        const enriched = best && best.n / visible >= 2.5 * (best.all / nAll);
        if (best && best.n >= 3 && best.n >= 0.35 * visible && enriched) cands.push({ g, n: best.n, x: best.x / best.n, y: best.y / best.n });
      }
      cands.sort((a, b) => b.n - a.n);
      ctx.font = `600 12px ${theme.font}`;
      ctx.textBaseline = "middle";
      ctx.textAlign = "center";
      ctx.lineJoin = "round";
      const boxes = [];
      const free = (b) => b.x0 >= 2 && b.y0 >= 2 && b.x1 <= W - 2 && b.y1 <= H - 2 &&
        boxes.every((o) => b.x1 < o.x0 || b.x0 > o.x1 || b.y1 < o.y0 || b.y0 > o.y1);
      for (const c of cands) {
        const text = names[c.g];
        const w = ctx.measureText(text).width + 6, hh = 17;
        const spots = [[0, -14], [0, 14], [0, 0], [-(w / 2 + 10), 0], [w / 2 + 10, 0]];
        for (const [dx, dy] of spots) {
          const b = { x0: c.x + dx - w / 2, x1: c.x + dx + w / 2, y0: c.y + dy - hh / 2, y1: c.y + dy + hh / 2 };
          if (!free(b)) continue;
          boxes.push(b);
          const tx = c.x + dx, ty = c.y + dy;
          ctx.strokeStyle = rgb(parseColorRGB(theme.bg), 0.85);
          ctx.lineWidth = 4;
          ctx.strokeText(text, tx, ty);
          ctx.fillStyle = theme.fg;
          ctx.fillText(text, tx, ty);
          ctx.fillStyle = rgb(palette[c.g]);
          ctx.fillRect(tx - (w - 6) / 2, ty + 7, w - 6, 2.5);
          placed++;
          break;
        }
      }
      ctx.textAlign = "start";
    }
    canvas.dataset.names = String(placed);
    // outliers the view does not show
    let off = 0;
    for (let i = 0; i < n; i++) {
      const x = sx(xy[2 * i]), y = sy(xy[2 * i + 1]);
      if (x < 0 || y < 0 || x > W || y > H) off++;
    }
    outside.textContent = off ? `${off} point${off > 1 ? "s" : ""} outside the view` : "";
    fitAllBtn.disabled = nOut === 0 && off === 0;
  }

  // ---- size
  const resize = () => {
    let box = wrap.getBoundingClientRect();
    if (box.width < 2 || box.height < 2) return; // not attached yet: the ResizeObserver calls again
    const want = `${Math.round(Math.max(360, Math.min(520, box.width * 0.5)))}px`; // use a wide panel's room
    if (wrap.style.height !== want) { wrap.style.height = want; box = wrap.getBoundingClientRect(); }
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
      values.length === n && (mode === "score" || mode === "relevance" || mode === "auc") ? h("div", { class: "slw-sub", text: `${mode === "auc" ? "label AUC" : mode}: ${fmt(values[i])}` }) : null,
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
  resetBtn.addEventListener("click", resetView);
  fitAllBtn.addEventListener("click", () => fit(bounds));
  namesBox.addEventListener("change", schedule);

  function sendSelected() {
    const idx = Int32Array.from(selected);
    model.send({ type: "select_many" }, undefined, [idx.buffer]);
    drawSelected();
  }
  function drawSelected() {
    const idx = Array.from(selected);
    selHead.textContent = `${idx.length} selected`;
    selBox.style.display = idx.length ? "" : "none";
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
