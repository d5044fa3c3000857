// Tiny DOM helpers. User-provided strings (labels, queries, concept and class names) are only
// ever written with textContent / text nodes: this module has no way to write HTML.

/**
 * h("div", {class: "a", title: "tip", dataset: {k: 1}, style: {width: "3px"}, on: {click: fn}}, ...children)
 * children: Node | string | number | null | array of those. Strings become text nodes.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = String(value);
      else if (key === "title") el.title = String(value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key === "style") Object.assign(el.style, value);
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
      else if (key === "value") el.value = value;
      else if (key === "innerHTML" || key.startsWith("on")) throw new Error(`refusing to set ${key}`);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace all children of el. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (typeof x !== "number") return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
  return x.toFixed(digits);
}

/** "layer3 #17" */
export function compName(layer, component) {
  return `${layer} #${component}`;
}

export function debounce(fn, ms) {
  let t = null;
  const wrapped = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(t);
  return wrapped;
}

/** A root element for a view, with the theme class and a data-testid. */
export function root(el, name) {
  el.classList.add("slw", `slw-${name}`);
  el.dataset.testid = `slw-${name}`;
  return el;
}
