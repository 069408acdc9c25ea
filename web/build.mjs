// npm run build: the page (src/) and its third-party files (node_modules/, installed from
// package-lock.json by `npm ci`) -> ../geoindex/serve/static/, and the basemap the Python PNG maps read
// -> ../geoindex/maps/basemap/. Both outputs are build products, ignored by git.
//
// No bundler: the vendor files are the packages' own browser builds (UMD globals L, h3, topojson),
// the page is plain ES modules. Nothing is fetched at run time from anywhere but the server.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const web = dirname(fileURLToPath(import.meta.url));
const root = join(web, "..");
const out = join(root, "geoindex", "serve", "static");
const basemapOut = join(root, "geoindex", "maps", "basemap");
const modules = join(web, "node_modules");

// [package, file in the package, name under static/vendor/]
const VENDOR = [
  ["leaflet", "dist/leaflet.js", "leaflet.js"],
  ["leaflet", "dist/leaflet.css", "leaflet.css"],
  ["leaflet", "dist/images", "images"],
  ["leaflet", "LICENSE", "LICENSE-leaflet"],
  ["h3-js", "dist/h3-js.umd.js", "h3-js.umd.js"],
  ["h3-js", "LICENSE", "LICENSE-h3-js"],
  ["topojson-client", "dist/topojson-client.min.js", "topojson-client.min.js"],
  ["topojson-client", "LICENSE", "LICENSE-topojson-client"],
  ["world-atlas", "countries-50m.json", "countries-50m.json"],
  ["world-atlas", "LICENSE", "LICENSE-world-atlas"],
];

function need(path) {
  if (!existsSync(path)) {
    console.error(`missing ${relative(root, path)}: run \`cd web && npm ci\` first (installs what package-lock.json pins)`);
    process.exit(1);
  }
  return path;
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "vendor"), { recursive: true });
cpSync(join(web, "src"), out, { recursive: true });
const versions = {};
for (const [pkg, file, name] of VENDOR) {
  cpSync(need(join(modules, pkg, file)), join(out, "vendor", name), { recursive: true });
  versions[pkg] = JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8")).version;
}
writeFileSync(join(out, "vendor", "versions.json"), JSON.stringify(versions, null, 2) + "\n");

mkdirSync(basemapOut, { recursive: true });
cpSync(join(modules, "world-atlas", "countries-50m.json"), join(basemapOut, "countries-50m.json"));
// the 1:10m countries are the polygons every label's country comes from (geoindex/cells/countries.py)
cpSync(join(modules, "world-atlas", "countries-10m.json"), join(basemapOut, "countries-10m.json"));

function size(path) {
  const s = statSync(path);
  return s.isDirectory() ? readdirSync(path).reduce((n, f) => n + size(join(path, f)), 0) : s.size;
}
console.log(`built ${relative(root, out)}/ (${(size(out) / 2 ** 20).toFixed(1)} MiB: ${Object.entries(versions)
  .map(([p, v]) => `${p} ${v}`).join(", ")}) and ${relative(root, basemapOut)}/countries-{50m,10m}.json`);
