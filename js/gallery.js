// ConceptGallery: the concept examples of one component (crops, or full images with the crop box
// and heatmap), its label, measures and top classes. Arrow keys move to neighbouring components.
import { h, replace, fmt, root } from "./lib/dom.js";
import { channel, errorBanner, watch, u8 } from "./lib/model.js";
import { decodeThumbs, rawToCanvas, requestThumbs, thumbStrip, whenVisible } from "./lib/thumbs.js";
import { plainBar, pct, selectBox, setOptions, header, chip, emptyNote, ready } from "./lib/ui.js";

/** full image (raw RGB) + heatmap overlay + crop box on one canvas */
function composite(img, heat, box) {
  if (heat) {
    const ctx = img.getContext("2d");
    const data = ctx.getImageData(0, 0, img.width, img.height);
    const px = data.data;
    for (let i = 0; i < heat.length && i * 4 < px.length; i++) {
      const a = (heat[i] / 255) * 0.55;
      px[i * 4] = px[i * 4] * (1 - a) + 230 * a;
      px[i * 4 + 1] = px[i * 4 + 1] * (1 - a) + 40 * a;
      px[i * 4 + 2] = px[i * 4 + 2] * (1 - a) + 40 * a;
    }
    ctx.putImageData(data, 0, 0);
  }
  if (box) {
    const ctx = img.getContext("2d");
    ctx.strokeStyle = "#ffd400";
    ctx.lineWidth = Math.max(1, img.width / 64);
    ctx.strokeRect(box[0] + 0.5, box[1] + 0.5, box[2] - box[0] - 1, box[3] - box[1] - 1);
  }
  return img;
}

function render({ model, el }) {
  root(el, "gallery");
  el.tabIndex = 0;
  const chan = channel(model);
  const banner = errorBanner(model);
  const layerSel = selectBox([], model.get("layer"), (v) => chan.send({ type: "goto", layer: v, component: 0 }));
  const compIn = h("input", { type: "number", min: 0, style: { width: "72px" }, "aria-label": "component" });
  const prev = h("button", { text: "‹", title: "previous component (←)" });
  const next = h("button", { text: "›", title: "next component (→)" });
  const modeCrops = h("button", { text: "crops", title: "concept-example crops" });
  const modeFull = h("button", { text: "full + heatmap", title: "full images with the crop box and the relevance heatmap" });
  const labelEl = h("span");
  const grid = h("div", { class: "slw-grid", dataset: { testid: "slw-gallery-grid" } });
  const more = h("button", { text: "more", style: { marginTop: "6px" } });
  const side = h("div", { class: "slw-side" });
  el.append(
    header("Concept gallery", labelEl),
    h("div", { class: "slw-toolbar" }, layerSel, h("span", { class: "slw-pager" }, prev, compIn, next),
      h("span", { class: "slw-spacer" }), h("span", { class: "slw-seg" }, modeCrops, modeFull)),
    banner.el,
    h("div", { class: "slw-body" }, h("div", {}, grid, more), side),
  );

  const goto = (c) => {
    const n = model.get("num_components");
    if (c >= 0 && c < n) chan.send({ type: "goto", layer: model.get("layer"), component: c });
  };
  prev.addEventListener("click", () => goto(model.get("component") - 1));
  next.addEventListener("click", () => goto(model.get("component") + 1));
  compIn.addEventListener("change", () => goto(Number(compIn.value)));
  modeCrops.addEventListener("click", () => chan.send({ type: "mode", mode: "crops" }));
  modeFull.addEventListener("click", () => chan.send({ type: "mode", mode: "full" }));
  el.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    if (e.key === "ArrowLeft") goto(model.get("component") - 1);
    else if (e.key === "ArrowRight") goto(model.get("component") + 1);
    else return;
    e.preventDefault();
  });

  let urls = [];
  let stops = [];
  let gen = 0;
  let loaded = 0;

  const loadPage = async (myGen) => {
    const layer = model.get("layer");
    const component = model.get("component");
    const mode = model.get("mode");
    const count = model.get("page_size");
    const size = model.get("thumb_size");
    const start = loaded;
    const slots = [];
    for (let i = 0; i < count && start + i < (model.get("info").indices || []).length; i++) {
      const s = h("div", { class: "slw-thumb slw-loading" });
      slots.push(s);
      grid.append(s);
    }
    if (!slots.length) return;
    loaded += slots.length;
    const parts = await requestThumbs(chan, {
      type: "thumbs", layer, component, start, count: slots.length, size,
      kind: mode === "full" ? "full" : "crops", format: mode === "full" ? "raw" : "png",
    });
    if (myGen !== gen) return;
    const imgs = [];
    const fullIdx = [];
    for (const { msg, buffers } of parts) {
      if (mode !== "full") {
        imgs.push(...decodeThumbs(msg, buffers, urls));
        continue;
      }
      const [n, hh, ww, c] = msg.shape;
      const all = u8(buffers[0]);
      const heat = msg.heatmap_shape ? u8(buffers[1]) : null;
      const hs = msg.heatmap_shape ? msg.heatmap_shape[1] * msg.heatmap_shape[2] : 0;
      for (let i = 0; i < n; i++) {
        const canvas = rawToCanvas(all.subarray(i * hh * ww * c, (i + 1) * hh * ww * c), ww, hh, c);
        const hm = heat && msg.heatmap_shape[1] === hh && msg.heatmap_shape[2] === ww ? heat.subarray(i * hs, (i + 1) * hs) : null;
        imgs.push(composite(canvas, hm, msg.boxes ? msg.boxes[i] : null));
        fullIdx.push((msg.indices || [])[i]);
      }
    }
    const acts = model.get("info").activations || [];
    const idx = mode === "full" ? fullIdx : model.get("info").indices || [];
    slots.forEach((slot, i) => {
      slot.classList.remove("slw-loading");
      if (!imgs[i]) return slot.classList.add("slw-empty");
      const k = start + i;
      slot.title = `example ${k + 1}: sample #${idx[mode === "full" ? i : k]}, activation ${fmt(acts[k])}`;
      slot.replaceChildren(imgs[i], h("span", { class: "slw-thumb-cap", text: `#${idx[mode === "full" ? i : k]}` }));
    });
    grid.dataset.loaded = String(loaded);
  };

  const drawGrid = () => {
    gen += 1;
    const myGen = gen;
    stops.forEach((s) => s());
    urls.forEach((u) => URL.revokeObjectURL(u));
    urls = [];
    grid.replaceChildren();
    loaded = 0;
    grid.style.setProperty("--slw-thumb", `${Math.min(model.get("thumb_size"), 84)}px`);
    const total = (model.get("info").indices || []).length;
    more.style.display = total > model.get("page_size") ? "" : "none";
    if (!total) {
      grid.append(emptyNote("no concept examples"));
      ready(el);
      return;
    }
    const fail = (err) => {
      if (myGen !== gen) return;
      model.set("error", String(err.message || err));
      model.save_changes();
    };
    stops.push(whenVisible(grid, () => loadPage(myGen).catch(fail)));
    ready(el); // drawn; the thumbnails arrive lazily once the grid is in view
    more.onclick = () => {
      loadPage(myGen).catch(fail);
      if (loaded + model.get("page_size") >= total) more.style.display = "none";
    };
  };

  const drawInfo = () => {
    const info = model.get("info") || {};
    const layer = model.get("layer");
    const c = model.get("component");
    setOptions(layerSel, model.get("layers").map((l) => [l, l]), layer);
    compIn.value = String(c);
    compIn.max = String(model.get("num_components") - 1);
    prev.disabled = c <= 0;
    next.disabled = c >= model.get("num_components") - 1;
    modeCrops.classList.toggle("slw-on", model.get("mode") !== "full");
    modeFull.classList.toggle("slw-on", model.get("mode") === "full");
    replace(labelEl, info.label ? chip(info.label, { cls: "slw-accent", title: `label: ${info.label}` }) : chip("no label", { cls: "slw-none" }));
    const ms = info.measures || {};
    const kv = (k, v, cls) => [h("span", { class: "slw-k", text: k }), h("span", { class: `slw-v ${cls || ""}`, text: v })];
    const dl = h("div", { class: "slw-kv" }, kv("component", `${layer} #${c}`, "slw-mono"));
    for (const [k, v] of Object.entries(ms)) dl.append(...kv(k, fmt(v)));
    const acts = info.activations || [];
    if (acts.length) dl.append(...kv("activation", `${fmt(acts[acts.length - 1])} … ${fmt(acts[0])}`));
    dl.append(...kv("examples", String((info.indices || []).length)));
    // "most relevant for": the component's share of each class's relevance in this layer
    const tops = info.top_classes || [];
    const value = (t) => (t.share ?? null) !== null ? t.share : t.relevance ?? 0;
    const maxV = Math.max(1e-12, ...tops.map((t) => Math.abs(value(t))));
    const hasShare = tops.some((t) => (t.share ?? null) !== null);
    replace(side, dl,
      tops.length ? h("div", { class: "slw-tops" },
        h("div", { class: "slw-sub", text: hasShare ? "most relevant for (share of the class's relevance)" : "most relevant for (relevance)" }),
        ...tops.map((t) => {
          const tip = (t.share ?? null) !== null
            ? `${pct(t.share)} of the relevance for class “${t.name}” in ${layer} goes through this component (mean CRP relevance over the class's samples: ${fmt(t.relevance)})`
            : `mean CRP relevance for class “${t.name}”: ${fmt(t.relevance)}`;
          return h("div", { class: "slw-top", title: tip, dataset: { testid: "slw-top-class" } },
            h("span", { class: "slw-top-name", text: t.name }),
            plainBar(Math.abs(value(t)) / maxV, value(t) < 0),
            h("span", { class: "slw-num", text: (t.share ?? null) !== null ? pct(t.share) : fmt(t.relevance) }));
        })) : null,
      description(info.description, layer, c),
      h("div", { class: "slw-hint", text: "← → neighbouring components" }));
  };

  // the component's last description (lens.describe, the LINE loop): the best concept and its
  // AUC, a few of its generated images, and the concepts tried with their AUCs
  let descStrips = [];
  const description = (d, layer, c) => {
    descStrips.forEach((s) => s.destroy());
    descStrips = [];
    if (!d) return null;
    const aucBar = (a) => plainBar(a === null || a === undefined ? 0 : Math.max(0, (a - 0.5) / 0.5), false);
    const tried = [...(d.history || [])].sort((a, b) => (b.auc ?? -1) - (a.auc ?? -1)).slice(0, 6);
    const strip = d.examples && d.examples[d.best]
      ? thumbStrip(chan, layer, c, Math.min(4, d.examples[d.best]), { size: 56, kind: "generated", extra: { concept: d.best },
        title: (i) => `generated image ${i + 1} of “${d.best}”` })
      : null;
    if (strip) descStrips.push(strip);
    return h("div", { class: "slw-desc", dataset: { testid: "slw-description" } },
      h("div", { class: "slw-sub", text: `description (${d.rounds} round${d.rounds === 1 ? "" : "s"} of generated images)`,
        title: "lens.describe: concepts proposed, drawn by a generator and scored by the AUC of this component's activation on their images against dataset images (0.5 = chance)" }),
      h("div", { class: "slw-desc-best" }, chip(d.best, { cls: "slw-accent", title: `best description: ${d.best}` }),
        h("span", { class: "slw-num", text: `AUC ${fmt(d.auc)}` }),
        d.polysemantic ? chip("polysemantic", { cls: "slw-warn", title: `distinct senses: ${(d.senses || []).join(" · ")}` }) : null),
      strip,
      ...tried.map((r) => h("div", { class: "slw-top", dataset: { testid: "slw-description-row" },
        title: r.auc === null ? `round ${r.round}: “${r.concept}” could not be drawn${r.note ? ` (${r.note})` : ""}` : `round ${r.round}: AUC ${fmt(r.auc)}` },
        h("span", { class: "slw-top-name", text: r.concept }),
        aucBar(r.auc),
        h("span", { class: "slw-num", text: r.auc === null ? "–" : fmt(r.auc) }))));
  };

  const redraw = () => {
    drawInfo();
    drawGrid();
  };
  redraw();
  const offs = [watch(model, ["info", "mode", "page_size", "thumb_size"], redraw), watch(model, ["layers", "num_components"], drawInfo)];
  return () => {
    offs.forEach((f) => f());
    descStrips.forEach((s) => s.destroy());
    stops.forEach((s) => s());
    urls.forEach((u) => URL.revokeObjectURL(u));
    banner.off();
    chan.close();
  };
}

export default { render };
