// npm run build: bundle src/ with the bun binary from node_modules into dist/, then copy
// index.html and style.css next to the bundle.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");

// node_modules/.bin/bun is the real binary once bun's postinstall ran; without it (for
// example npm ci --ignore-scripts) it is a placeholder and the platform package has it.
function findBun() {
  const linked = join(root, "node_modules", "bun", "bin", "bun.exe");
  if (existsSync(linked) && statSync(linked).size > 1 << 20) return linked;
  const arch = process.arch === "arm64" ? "aarch64" : process.arch;
  for (const suffix of ["", "-baseline", "-musl", "-musl-baseline"]) {
    const candidate = join(root, "node_modules", "@oven", `bun-${process.platform}-${arch}${suffix}`, "bin", "bun");
    if (existsSync(candidate)) return candidate;
  }
  throw new Error("bun not found in node_modules: run npm ci in frontend/ first");
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);
const r = spawnSync(findBun(), ["build", "src/main.jsx", "--outdir", "dist", "--minify", "--target", "browser"], {
  cwd: root,
  stdio: "inherit",
});
if (r.status !== 0) process.exit(r.status ?? 1);
copyFileSync(join(root, "index.html"), join(dist, "index.html"));
copyFileSync(join(root, "src", "style.css"), join(dist, "style.css"));
console.log("built", dist);
