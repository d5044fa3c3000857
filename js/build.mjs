// Bundle one ES module per view into ../semlens_widgets/static/<view>.js (+ semlens.css).
//
// The output is deterministic (no timestamps, no absolute paths, no source maps) so that CI can
// rebuild and fail when the committed bundle differs:   npm ci && npm run check
//
//   node build.mjs          write the bundles
//   node build.mjs --check  build in memory and exit 1 if any committed file differs
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "semlens_widgets", "static");
const views = ["search", "gallery", "map", "sankey", "audit", "compare", "explorer"];
const check = process.argv.includes("--check");

const result = await build({
  absWorkingDir: here,
  entryPoints: Object.fromEntries(views.map((v) => [v, `./${v}.js`])),
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  charset: "utf8",
  write: false,
  outdir: "out", // virtual: files are written below, relative names only
  logLevel: "warning",
});

const files = result.outputFiles.map((f) => ({
  name: relative(join(here, "out"), f.path),
  text: f.text,
}));
files.push({ name: "semlens.css", text: readFileSync(join(here, "lib", "style.css"), "utf8") });

let stale = [];
mkdirSync(outdir, { recursive: true });
for (const { name, text } of files) {
  const target = join(outdir, name);
  const old = existsSync(target) ? readFileSync(target, "utf8") : null;
  if (check) {
    if (old !== text) stale.push(name);
  } else if (old !== text) {
    writeFileSync(target, text);
  }
  if (!check) console.log(`${name.padEnd(14)} ${(Buffer.byteLength(text) / 1024).toFixed(1)} KiB`);
}
if (check) {
  if (stale.length) {
    console.error(`bundle out of date: ${stale.join(", ")} (run \`npm run build\` in js/ and commit)`);
    process.exit(1);
  }
  console.log("bundles up to date");
}
