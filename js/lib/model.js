// Talking to the Python side: typed views over binary traits, request/reply custom messages with
// binary buffers, the error banner and the linked selection.
import { h, replace } from "./dom.js";

/**
 * Bytes trait / message buffer -> Uint8Array. Front ends differ: JupyterLab hands DataViews,
 * VS Code and Colab DataViews or ArrayBuffers, some hosts typed arrays, and marimo gives binary
 * data nested in a dict trait as a base64 string; all of them read the same here.
 */
export function u8(buf) {
  if (!buf) return new Uint8Array(0);
  if (buf instanceof Uint8Array) return buf;
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  if (ArrayBuffer.isView(buf)) return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength); // DataView, typed arrays
  if (typeof buf === "string") return fromBase64(buf);
  return new Uint8Array(0);
}

function fromBase64(text) {
  try {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch (err) {
    return new Uint8Array(0); // not base64: no bytes rather than garbage
  }
}

function typed(Ctor, buf) {
  const b = u8(buf);
  const n = Math.floor(b.byteLength / Ctor.BYTES_PER_ELEMENT);
  if (b.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(b.buffer, b.byteOffset, n);
  return new Ctor(b.slice(0, n * Ctor.BYTES_PER_ELEMENT).buffer); // unaligned: copy
}
export const f32 = (buf) => typed(Float32Array, buf);
export const i32 = (buf) => typed(Int32Array, buf);
export const u16 = (buf) => typed(Uint16Array, buf);

let counter = 0;

/**
 * A request/reply channel over anywidget custom messages. Python answers every message that
 * carries a `req` id with {type, req, ...} (+ buffers) or {type: "error", req, message}.
 */
export function channel(model) {
  const pending = new Map();
  const listeners = new Set();
  const onMsg = (msg, buffers) => {
    if (!msg || typeof msg !== "object") return;
    const p = msg.req !== undefined ? pending.get(msg.req) : undefined;
    if (p) {
      pending.delete(msg.req);
      clearTimeout(p.timer);
      if (msg.type === "error") p.reject(new Error(msg.message || "error"));
      else p.resolve({ msg, buffers: buffers || [] });
      return;
    }
    for (const fn of listeners) fn(msg, buffers || []);
  };
  model.on("msg:custom", onMsg);
  return {
    request(content, timeoutMs = 60000) {
      const req = `${Date.now().toString(36)}-${++counter}`;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(req);
          reject(new Error(`no reply to ${content.type} within ${timeoutMs / 1000} s`));
        }, timeoutMs);
        pending.set(req, { resolve, reject, timer });
        model.send({ ...content, req });
      });
    },
    /** fire and forget */
    send(content) {
      model.send(content);
    },
    listen(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    close() {
      model.off("msg:custom", onMsg);
      for (const p of pending.values()) clearTimeout(p.timer);
      pending.clear();
      listeners.clear();
    },
  };
}

/** Subscribe to trait changes; returns an unsubscribe function. */
export function watch(model, names, fn) {
  const events = names.map((n) => `change:${n}`);
  for (const ev of events) model.on(ev, fn);
  return () => {
    for (const ev of events) model.off(ev, fn);
  };
}

/** The red banner that shows the `error` trait (Python sets it when it rejects a message). */
export function errorBanner(model) {
  const el = h("div", { class: "slw-error", role: "alert", dataset: { testid: "slw-error" } });
  const close = h("button", { class: "slw-error-close", title: "dismiss", text: "×" });
  close.addEventListener("click", () => {
    model.set("error", "");
    model.save_changes();
  });
  const update = () => {
    const msg = model.get("error") || "";
    el.style.display = msg ? "" : "none";
    replace(el, h("span", { text: msg }), close);
  };
  update();
  const off = watch(model, ["error"], update);
  return { el, off };
}

/** Show a local (front-end) error in the banner's place without a kernel round trip. */
export function localError(model, err) {
  model.set("error", String(err && err.message ? err.message : err));
  model.save_changes();
}

/** Current selection {layer, component} or null. */
export function selection(model) {
  const s = model.get("selection");
  return s && typeof s.layer === "string" && Number.isInteger(s.component) ? s : null;
}

/** Ask Python to select a component everywhere (validated there, then linked to other views). */
export function select(model, layer, component) {
  model.send({ type: "select", layer, component });
}

export function isSelected(model, layer, component) {
  const s = selection(model);
  return !!s && s.layer === layer && s.component === component;
}
