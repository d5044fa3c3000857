// Light/dark theming. CSS uses JupyterLab variables (with VS Code / plain fallbacks) directly;
// canvas drawing reads the resolved colours here and redraws when the theme changes.

const VARS = {
  bg: ["--jp-layout-color0", "--vscode-editor-background", "#ffffff"],
  bg2: ["--jp-layout-color2", "--vscode-editorWidget-background", "#eeeeee"],
  fg: ["--jp-ui-font-color1", "--vscode-editor-foreground", "#1f1f1f"],
  fg2: ["--jp-ui-font-color2", "--vscode-descriptionForeground", "#616161"],
  fg3: ["--jp-ui-font-color3", "--vscode-disabledForeground", "#9e9e9e"],
  border: ["--jp-border-color2", "--vscode-widget-border", "#dddddd"],
  accent: ["--jp-brand-color1", "--vscode-focusBorder", "#1976d2"],
  warn: ["--jp-warn-color1", "--vscode-editorWarning-foreground", "#f57c00"],
  error: ["--jp-error-color1", "--vscode-errorForeground", "#d32f2f"],
  font: ["--jp-ui-font-family", "--vscode-font-family", "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"],
};

/** Resolved theme colours for canvas drawing. */
export function themeColors(el) {
  const cs = getComputedStyle(el);
  const out = {};
  for (const [k, names] of Object.entries(VARS)) {
    let v = "";
    for (const n of names.slice(0, -1)) {
      v = cs.getPropertyValue(n).trim();
      if (v) break;
    }
    out[k] = v || names[names.length - 1];
  }
  out.dark = isDark(out.bg);
  return out;
}

function isDark(color) {
  const c = parseColor(color);
  if (!c) return false;
  return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 128;
}

let probe = null;
/** any CSS colour -> [r, g, b] (0..255) */
export function parseColor(color) {
  const m = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(color.trim());
  if (m) {
    let s = m[1];
    if (s.length === 3) s = s.split("").map((ch) => ch + ch).join("");
    return [0, 2, 4].map((i) => parseInt(s.slice(i, i + 2), 16));
  }
  const r = /rgba?\(([^)]+)\)/.exec(color);
  if (r) return r[1].split(/[ ,/]+/).slice(0, 3).map(Number);
  if (typeof document === "undefined") return null;
  probe = probe || document.createElement("canvas").getContext("2d");
  probe.fillStyle = "#000";
  probe.fillStyle = color;
  return parseColor(probe.fillStyle);
}

/** Call fn when JupyterLab (body data attributes / class) or VS Code switches theme. */
export function onThemeChange(fn) {
  if (typeof MutationObserver === "undefined") return () => {};
  const obs = new MutationObserver(() => fn());
  obs.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light", "class"] });
  return () => obs.disconnect();
}

// Categorical palette: 30 colours, Tableau 10 (without its grey) extended by a greedy max-min
// search in CIELAB (Glasbey-style) over colours of lightness 45-80 and chroma 30-70, kept away
// from the neutrals below and from both page backgrounds. Any two of the first 14 differ by
// deltaE >= 30, any two of all 30 by >= 24: readable on light and dark themes.
export const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#7868e0",
  "#c82080", "#787000", "#f890f8", "#00e0b0", "#c8c080", "#a8d048", "#00c8f8", "#a8a8f8", "#307858", "#a85820",
  "#f8a878", "#a840b0", "#0078d8", "#b04868", "#7860a8", "#48d878", "#f878b0", "#98d098", "#788850", "#f0b0f0",
];
/** Neutral colours: components without a label, and labels beyond the palette grouped as "other". */
export const UNLABELLED_COLOR = "#a3a3a3";
export const OTHER_COLOR = "#6b6b6b";
export const CATEGORY_COLORS = { valid: "#59a14f", spurious: "#e15759", both: "#edc948", unexpected: "#9e9e9e" };

/** Colour i of the palette; past its end the neutral "other" colour (never a repeated hue). */
export function categorical(i) {
  return i >= 0 && i < PALETTE.length ? PALETTE[i] : OTHER_COLOR;
}

/**
 * Colours for categories with counts: the largest `PALETTE.length` categories (by count, ties
 * by order) get distinct palette colours, the rest share OTHER_COLOR. `neutral` indices (e.g.
 * "unlabelled") get UNLABELLED_COLOR and take no palette slot.
 * Returns {colors: [hex per category], other: [indices grouped as "other"]}.
 */
export function assignColors(counts, neutral = []) {
  const skip = new Set(neutral);
  const order = counts.map((c, i) => i).filter((i) => !skip.has(i) && counts[i] > 0)
    .sort((a, b) => counts[b] - counts[a] || a - b);
  const colors = counts.map((_, i) => (skip.has(i) ? UNLABELLED_COLOR : OTHER_COLOR));
  const other = [];
  order.forEach((i, rank) => {
    if (rank < PALETTE.length) colors[i] = PALETTE[rank];
    else other.push(i);
  });
  return { colors, other };
}

// Viridis, 9 stops, linearly interpolated.
const VIRIDIS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];

/** t in [0,1] -> [r,g,b] */
export function viridis(t) {
  if (!(t >= 0)) t = 0;
  if (t > 1) t = 1;
  const x = t * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - i;
  const a = VIRIDIS[i];
  const b = VIRIDIS[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

export function rgb(c, alpha = 1) {
  return alpha >= 1 ? `rgb(${c[0] | 0},${c[1] | 0},${c[2] | 0})` : `rgba(${c[0] | 0},${c[1] | 0},${c[2] | 0},${alpha})`;
}
