// Thumbnails from binary buffers: raw RGB/RGBA bytes -> ImageData on a canvas, or PNG bytes ->
// Blob URL on an <img>. Loaded lazily: a strip asks Python for its images only once it scrolls
// into view (IntersectionObserver).
import { h } from "./dom.js";
import { u8 } from "./model.js";

/** raw bytes [h, w, c] (c = 3 or 4) -> canvas */
export function rawToCanvas(bytes, w, hgt, c) {
  const canvas = h("canvas", { class: "slw-thumb-img", width: w, height: hgt });
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, hgt);
  const out = img.data;
  const n = w * hgt;
  if (c === 4) out.set(bytes.subarray(0, n * 4));
  else if (c === 3) {
    for (let i = 0, j = 0, k = 0; i < n; i++, j += 3, k += 4) {
      out[k] = bytes[j];
      out[k + 1] = bytes[j + 1];
      out[k + 2] = bytes[j + 2];
      out[k + 3] = 255;
    }
  } else if (c === 1) {
    for (let i = 0, k = 0; i < n; i++, k += 4) {
      out[k] = out[k + 1] = out[k + 2] = bytes[i];
      out[k + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

/**
 * Decode a "thumbs" reply into an array of elements (<img> for png, <canvas> for raw).
 * `urls` collects Blob URLs so the view can revoke them when it is destroyed.
 */
export function decodeThumbs(msg, buffers, urls) {
  const out = [];
  if (msg.format === "png") {
    buffers.forEach((b, i) => {
      const url = URL.createObjectURL(new Blob([u8(b)], { type: "image/png" }));
      urls?.push(url);
      const img = h("img", { class: "slw-thumb-img", alt: "", draggable: "false" });
      img.src = url;
      out.push(img);
    });
  } else if (msg.format === "raw") {
    const [n, hgt, w, c] = msg.shape;
    const all = u8(buffers[0]);
    const step = hgt * w * c;
    for (let i = 0; i < n; i++) out.push(rawToCanvas(all.subarray(i * step, (i + 1) * step), w, hgt, c));
  }
  return out;
}

/**
 * Ask the kernel for `req.count` thumbnails. It answers with as many as fit in one message of
 * about half a megabyte (front ends such as VS Code and Colab struggle with larger ones) and says
 * how many it sent: this asks again from where the last reply stopped until all are there.
 * Returns the replies in order: [{msg, buffers}, ...].
 */
export async function requestThumbs(chan, req) {
  const parts = [];
  let start = req.start || 0;
  let left = req.count;
  while (left > 0) {
    const part = await chan.request({ ...req, start, count: left });
    parts.push(part);
    const n = part.msg.count || 0;
    if (n <= 0 || start + n >= (part.msg.total ?? Infinity)) break;
    start += n;
    left -= n;
  }
  return parts;
}

let observer = null;
const callbacks = new WeakMap();

/** Call fn() once, when el first comes within 200 px of the viewport. */
export function whenVisible(el, fn) {
  if (typeof IntersectionObserver === "undefined") {
    queueMicrotask(fn);
    return () => {};
  }
  if (!observer) {
    observer = new IntersectionObserver(
      (entries) => {
        for (const e of entries) {
          if (!e.isIntersecting) continue;
          const cb = callbacks.get(e.target);
          observer.unobserve(e.target);
          callbacks.delete(e.target);
          if (cb) cb();
        }
      },
      { rootMargin: "200px" },
    );
  }
  callbacks.set(el, fn);
  observer.observe(el);
  return () => {
    observer.unobserve(el);
    callbacks.delete(el);
  };
}

/**
 * A strip of `count` thumbnail slots for (layer, component), filled lazily.
 * opts: {size, kind, format, extra (more request fields, e.g. {concept}), onClick(i), title(i)}
 */
export function thumbStrip(chan, layer, component, count, opts = {}) {
  const { size = 56, kind = "crops", format = "png", cls = "", extra = {} } = opts;
  const grid = cls.includes("slw-grid"); // a wrapping grid (its own CSS), else one row that always fits
  const slots = [];
  for (let i = 0; i < count; i++) slots.push(h("div", { class: "slw-thumb slw-loading" }));
  // one row of `count` equal columns, each at most `size` px: the row shrinks its thumbnails
  // to the width it is given instead of cutting the last ones off
  const el = h("div", { class: `slw-strip ${cls}`, dataset: { testid: "slw-strip" },
    style: grid ? {} : { gridTemplateColumns: `repeat(${count}, minmax(0, ${size}px))` } }, slots);
  const urls = [];
  const stop = whenVisible(el, async () => {
    try {
      const parts = await requestThumbs(chan, { ...extra, type: "thumbs", layer, component, start: 0, count, size, kind, format });
      const imgs = parts.flatMap((p) => decodeThumbs(p.msg, p.buffers, urls));
      const msg = parts[0].msg;
      slots.forEach((slot, i) => {
        slot.classList.remove("slw-loading");
        if (imgs[i]) {
          slot.replaceChildren(imgs[i]);
          if (opts.title) slot.title = opts.title(i, msg);
          if (opts.onClick) {
            slot.classList.add("slw-clickable");
            slot.addEventListener("click", () => opts.onClick(i, msg));
          }
        } else slot.classList.add("slw-empty");
      });
      el.dataset.loaded = "true";
    } catch (err) {
      el.dataset.loaded = "error";
      slots.forEach((s) => {
        s.classList.remove("slw-loading");
        s.classList.add("slw-empty");
        s.title = String(err.message || err);
      });
    }
  });
  el.destroy = () => {
    stop();
    urls.forEach((u) => URL.revokeObjectURL(u));
  };
  return el;
}
