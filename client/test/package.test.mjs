// @plank-db/client as a package, and the client README's examples as tests.
//
// 1. The README's install commands, as written (paths made absolute): `npm pack` of
//    client/ and `npm install` of the tarball into a fresh app (client/fixtures/app: preact,
//    typescript and ws pinned; the package comes only from the tarball).
// 2. tsc --strict over the app's type checks (checks.ts: subscribeTable<Todo>, the change
//    union with visible: false, ServerMessage, liveTable<Todo>, useLiveTable<Todo>) and
//    the README's TypeScript example.
// 3. Every js/jsx/ts code block of client/README.md, found by the heading above it, is run
//    against the real worker (PLANK_URL, PLANK_PSQL) in the app, importing the installed
//    package: in Node (with client/fixtures/app/prelude.mjs standing for the page: location,
//    render()), bundled for the browser with Bun and then run, or (the JSX hook example)
//    bundled. The examples' URLs 127.0.0.1:8090 are replaced by the worker's, wss:// by
//    ws://; nothing else is changed. A block under a heading this file does not know
//    fails the test, so the README cannot grow an example that is not run.
// test/browser/client.test.mjs installs the package the same way and runs the browser
// examples in Chromium; the code both use is in client/fixtures/package.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ROOT, bundleForBrowser, findBun, forServer as forServerAt, grantWebUser, installCommands, jwtSecret,
  packAndInstall, psqlWith, q, readmeBlocks, run,
} from "../fixtures/package.mjs";

const URL_ = process.env.PLANK_URL;
const PSQL = process.env.PLANK_PSQL;
const skip = !URL_ || !PSQL ? "set PLANK_URL and PLANK_PSQL to run the package tests" : false;
const HOSTPORT = URL_ ? new URL(URL_).host : "";
const WAIT_MS = 15_000;
const psql = psqlWith(PSQL);
const forServer = (code) => forServerAt(code, HOSTPORT);

let TMP;
let APP;
let secret = "";
before(() => {
  TMP = mkdtempSync(join(tmpdir(), "plank-client-pkg-"));
  APP = join(TMP, "app");
  if (skip) return;
  secret = jwtSecret(psql);
  grantWebUser(psql); // the role of the README's token examples
});
after(() => {
  if (TMP) rmSync(TMP, { recursive: true, force: true });
});

test("the README's install commands: npm pack, npm install of the tarball into a fresh app", { timeout: 300_000 }, () => {
  const cmds = installCommands();
  assert.deepEqual(cmds.map((c) => c.split(" ").slice(0, 2).join(" ")), ["npm pack", "npm install"]);
  const { packed, named } = packAndInstall(TMP, APP);
  assert.match(packed, /^plank-db-client-\d+\.\d+\.\d+\.tgz$/);
  assert.equal(named, packed, "the README names the tarball npm pack writes");
  const files = run("tar", ["-tzf", join(TMP, packed)], TMP).split("\n").filter(Boolean).sort();
  for (const f of ["package/LICENSE", "package/README.md", "package/package.json", "package/src/index.js",
    "package/src/index.d.ts", "package/src/live.js", "package/src/preact.js", "package/src/react.js"]) {
    assert.ok(files.includes(f), `the tarball has ${f}: ${files.join(" ")}`);
  }
  assert.ok(!files.some((f) => f.includes("/test/") || f.includes("/fixtures/")), "no tests or fixtures in the tarball");
  const pkg = JSON.parse(readFileSync(join(APP, "node_modules", "@plank-db", "client", "package.json"), "utf8"));
  assert.equal(pkg.name, "@plank-db/client");
  assert.equal(pkg.license, "PostgreSQL");
  assert.equal(pkg.private, undefined, "publishable");
  assert.equal(readFileSync(join(APP, "node_modules", "@plank-db", "client", "LICENSE"), "utf8"),
    readFileSync(join(ROOT, "LICENSE"), "utf8"), "client/LICENSE is the project's LICENSE");
});

test("types: tsc --strict over the app's checks and the README's TypeScript example", { timeout: 120_000 }, () => {
  const ts = readmeBlocks().filter((b) => b.lang === "ts");
  assert.equal(ts.length, 1);
  writeFileSync(join(APP, "readme-example.ts"), ts[0].code);
  try {
    run(join(APP, "node_modules", ".bin", "tsc"), ["-p", "."], APP);
  } catch (e) {
    assert.fail(`tsc failed:\n${e.stdout}${e.stderr}`);
  }
});

/**
 * Run a file with `cmd` in the app; returns {lines, waitFor(re), stop()}: stdout lines as
 * they come, a bounded wait for a line matching re, and SIGINT then wait for the exit.
 */
function start(cmd, args) {
  const child = spawn(cmd, args, {
    cwd: APP,
    env: { ...process.env, PLANK_HOSTPORT: HOSTPORT, PLANK_JWT_SECRET: secret },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines = [];
  const waiters = new Set();
  let buf = "";
  let err = "";
  child.stdout.on("data", (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      for (const w of [...waiters]) w();
    }
  });
  child.stderr.on("data", (d) => { err += d; });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return {
    lines,
    /** A line matching re, among the lines from index `from` on. */
    waitFor(re, what = String(re), from = 0) {
      return this.waitText((text) => text.split("\n").slice(from).find((l) => re.test(l)), what);
    },
    /** pred(all stdout so far) truthy: resolves with its result. */
    waitText(pred, what) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = pred(lines.join("\n"));
          if (hit) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(hit);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what}; stdout:\n${lines.join("\n")}\nstderr:\n${err}`));
        }, WAIT_MS);
        waiters.add(check);
        check();
      });
    },
    async stop() {
      child.kill("SIGINT");
      const t = setTimeout(() => child.kill("SIGKILL"), 5_000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
    stderr: () => err,
  };
}

const node = (file) => start(process.execPath, ["--import", "./prelude.mjs", file]);

/** Wait until the worker has a subscription with this id (the example is listening). */
async function subscribed(id) {
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    if (psql(`SELECT count(*) FROM plank.subscriptions WHERE id = ${q(id)}`) !== "0") return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no subscription ${id} within ${WAIT_MS} ms`);
}

const tag = (what) => `readme-${what}-${process.pid}-${Date.now()}`;
const rendered = (name) => new RegExp(`^RENDER .*"name":"${name}"`);
const renderedWithout = (name) => (l) => l.startsWith("RENDER ") && !l.includes(`"name":"${name}"`);
after(() => {
  if (!skip) psql("DELETE FROM public.items WHERE name LIKE 'readme-%'");
});

/** Follow a rendered table: an insert shows, a delete removes it. */
async function followsRows(proc, id) {
  await subscribed(id);
  await proc.waitFor(/^RENDER /, "the first render");
  const name = tag(id);
  psql(`INSERT INTO public.items (name, value) VALUES (${q(name)}, 1)`);
  await proc.waitFor(rendered(name), `a render with ${name}`);
  const seen = proc.lines.length;
  psql(`DELETE FROM public.items WHERE name = ${q(name)}`);
  await proc.waitFor({ test: renderedWithout(name) }, `a render without ${name}`, seen);
}

// heading -> what the test does with a block under it
const HANDLERS = {
  "Browser: a live table": async (code, i) => {
    const file = `example-${i}.js`;
    writeFileSync(join(APP, file), forServer(code));
    const p = node(file);
    try {
      await followsRows(p, "items");
    } finally {
      await p.stop();
    }
    // the same code bundled for the browser with Bun, then run
    const bun = findBun();
    assert.ok(bun, "bun from frontend/node_modules (scripts/setup.sh installs it)");
    const bundle = bundleForBrowser(bun, APP, file, `bundle-${i}.js`);
    assert.doesNotMatch(bundle, /from\s*"(node:|ws")/, "the browser bundle imports nothing of Node");
    const b = node(`bundle-${i}.js`);
    try {
      await followsRows(b, "items");
    } finally {
      await b.stop();
    }
  },
  "Preact and React": async (code, i) => {
    const file = `example-${i}.jsx`;
    writeFileSync(join(APP, file), code);
    const bun = findBun();
    assert.ok(bun);
    const bundle = bundleForBrowser(bun, APP, file, `bundle-${i}.js`, ["--external", "preact", "--external", "preact/*"]);
    assert.match(bundle, /useLiveTable|function \w+\(/);
    // the component's module loads, and exports the component
    const p = start(process.execPath, ["--input-type=module", "-e",
      `import(${JSON.stringify(join(APP, `bundle-${i}.js`))}).then((m) => console.log("EXPORTS", Object.keys(m).join(",")))`]);
    try {
      await p.waitFor(/^EXPORTS Items$/);
    } finally {
      await p.stop();
    }
  },
  TypeScript: async (code) => {
    // type-checked by the test above; run here with Bun, which runs TypeScript as it is
    writeFileSync(join(APP, "readme-example.ts"), forServer(code));
    const bun = findBun();
    assert.ok(bun);
    const name = tag("ts");
    const p = start(bun, ["run", "readme-example.ts"]);
    try {
      await p.waitFor(/^\d+ items, the newest: /, "the snapshot logged");
      psql(`INSERT INTO public.items (name, value) VALUES (${q(name)}, 1)`);
      await p.waitFor(new RegExp(`^\\d+ items, the newest: ${name}$`), "the rows logged");
    } finally {
      await p.stop();
    }
  },
  "The events themselves": async (code, i) => {
    const file = `example-${i}.js`;
    writeFileSync(join(APP, file), forServer(code));
    const p = node(file);
    try {
      await followsRows(p, "items");
      await p.waitFor(/^subscribed at \d+$/, "the ack handler");
    } finally {
      await p.stop();
    }
  },
  "Browser, with a token from your auth provider": async (code, i) => {
    const file = `example-${i}.js`;
    writeFileSync(join(APP, file), forServer(code));
    const p = node(file);
    try {
      await p.waitFor(/^signed in as web_user/, "the auth event");
      await p.waitFor(/^RENDER /, "the snapshot");
      assert.ok(!p.lines.some((l) => l.startsWith("SIGNIN")), "no sign-in prompt");
    } finally {
      await p.stop();
    }
  },
  Node: async (code, i) => {
    const file = `example-${i}.js`;
    writeFileSync(join(APP, file), forServer(code));
    const p = start(process.execPath, [file]); // Node on its own: the example brings ws
    try {
      if (code.includes("subscribeChannel")) {
        await subscribed("chat");
        await subscribed("apples");
        psql("NOTIFY chat, 'hi from the readme test'");
        await p.waitFor(/^chat: hi from the readme test \(pid \d+\)$/, "the notify");
        psql("INSERT INTO public.items (name, value) VALUES ('apple', 4242)");
        await p.waitText((text) => /^\d+ INSERT \{[^}]*name: 'apple',[^}]*value: 4242,/m.test(text), "the filtered change");
        psql("DELETE FROM public.items WHERE name = 'apple' AND value = 4242");
        const r = await p.stop();
        assert.equal(r.code, 0, `SIGINT closes the client and the process ends: ${JSON.stringify(r)} ${p.stderr()}`);
      } else {
        await p.waitFor(/^authenticated as web_user$/, "the auth event");
        await subscribed("new-items");
        const name = tag("service");
        psql(`INSERT INTO public.items (name, value) VALUES (${q(name)}, 1)`);
        await p.waitText((text) => text.includes(`name: '${name}'`), "the insert");
        await p.stop();
      }
    } finally {
      await p.stop();
    }
  },
};

test("every js, jsx and ts example of client/README.md runs against the worker", { skip, timeout: 300_000 }, async (t) => {
  const blocks = readmeBlocks().filter((b) => ["js", "jsx", "ts"].includes(b.lang));
  assert.ok(blocks.length >= 7, `found ${blocks.length} examples`);
  for (const b of blocks) {
    const handler = HANDLERS[b.heading];
    assert.ok(handler, `no test for the README example under "${b.heading}"`);
    await t.test(`${b.heading} (block ${b.i})`, { timeout: 120_000 }, () => handler(b.code, b.i));
  }
});
