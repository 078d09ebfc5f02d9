// The packed @plank-db/client in Chromium, against the real worker.
//
// The client is installed as client/README.md's Install block says (`npm pack`, then
// `npm install` of the tarball into a fresh app, client/fixtures/app; the same code as
// client/test/package.test.mjs: client/fixtures/package.mjs), and its pages are bundled
// for the browser with Bun from that app:
//   - every README example that runs in a page (a js block using `location`), as written
//     but for its address (127.0.0.1:8090 -> the worker's, wss:// -> ws://), with
//     client/fixtures/browser/page.js around it (render() writes the rows into the DOM)
//     and client/fixtures/browser/auth.js as its "./auth.js";
//   - client/fixtures/browser/live.jsx: Preact with the README's <Items> (its "Preact and
//     React" example) on public.items, and useLiveTable() on a row-level security table
//     read with a token's role.
// Chromium loads them from the worker's own origin (Playwright answers the requests under
// /plank-client-test/; the WebSockets go to the worker). Rows inserted, updated and deleted
// with psql must show up, change and disappear in the rendered DOM; an UPDATE that takes a
// row out of the role's view (`visible: false`) must remove it; after the worker is
// terminated, the page reconnects by itself and resyncs (epoch_changed) to rows written
// while it was down.
//
//   npm ci --prefix test/browser
//   PLANK_URL=http://127.0.0.1:8090/ \
//   PLANK_PSQL='psql -h 127.0.0.1 -p 5433 -U postgres -d plank_demo -v ON_ERROR_STOP=1 -qAt' \
//   node --test test/browser/client.test.mjs
//
// Needs the server's plank.jwt_secret (read with psql, or PLANK_JWT_SECRET) and Bun in
// frontend/node_modules (scripts/setup.sh installs it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { PLANK_URL, acquireLock, launchChromium, psql, skipReason, sqlString } from "./lib.mjs";
import {
  FIXTURES, bundleForBrowser, createRlsTable, findBun, forServer, grantWebUser, jwtSecret, mintJwt, packAndInstall, readmeBlocks,
} from "../../client/fixtures/package.mjs";

const WAIT = { timeout: 10_000 };
const RECOVER = { timeout: 30_000 };
const PATH = "/plank-client-test/";
const TABLE = "public.client_browser";
const ROLE = "client_browser_reader";

const skip = skipReason || (!findBun() ? "no bun in frontend/node_modules (scripts/setup.sh installs it)" : false);

/** An HTML page: page.js, then the module bundle `script`. */
const html = (title, script) => `<!doctype html>
<html><head><meta charset="utf-8"><title>${title}</title></head>
<body>
<p>status: <span id="status"></span>, renders: <span id="renders">0</span>, sign-in: <span id="signin"></span></p>
<table><tbody id="rows"></tbody></table>
<div id="root"></div>
<script src="page.js"></script>
<script type="module" src="${script}"></script>
</body></html>
`;

/** The page's console lines, and a bounded wait for one matching re. */
function consoleOf(page) {
  const lines = [];
  const waiters = new Set();
  page.on("console", (msg) => {
    lines.push(msg.text());
    for (const w of [...waiters]) w();
  });
  return {
    lines,
    waitFor(re) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = lines.find((l) => re.test(l));
          if (hit === undefined) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no console line matching ${re} within ${WAIT.timeout} ms:\n${lines.join("\n")}`));
        }, WAIT.timeout);
        waiters.add(check);
        check();
      });
    },
  };
}

/**
 * page.waitForFunction(fn, arg, wait); on a timeout, the error says what was awaited and
 * what the page shows.
 */
async function until(page, what, fn, arg, wait = WAIT) {
  try {
    await page.waitForFunction(fn, arg, wait);
  } catch (e) {
    const shown = await page.evaluate(() => document.body.innerText).catch(() => "(page gone)");
    throw new Error(`${what}: ${e.message.split("\n")[0]}\nthe page shows:\n${shown}`);
  }
}

/** The trimmed text of every element matching selector, in document order. */
const texts = (page, selector) => page.locator(selector).evaluateAll((els) => els.map((e) => e.textContent.trim()));

test("the packed client in Chromium: the README's browser examples and a Preact page follow the table live", { skip, timeout: 240_000 }, async (t) => {
  const startedAt = Date.now();
  const hostport = new URL(PLANK_URL).host;
  const base = new URL(PATH, PLANK_URL).href;

  // --- the app: the packed client installed, the pages bundled -----------------------
  const tmp = mkdtempSync(join(tmpdir(), "plank-client-browser-"));
  t.after(() => rmSync(tmp, { recursive: true, force: true }));
  const app = join(tmp, "app");
  packAndInstall(tmp, app);
  const src = join(app, "browser");
  const dist = join(src, "dist");
  mkdirSync(dist, { recursive: true });
  for (const f of readdirSync(join(FIXTURES, "browser"))) copyFileSync(join(FIXTURES, "browser", f), join(src, f));
  copyFileSync(join(src, "page.js"), join(dist, "page.js"));
  const bun = findBun();
  const blocks = readmeBlocks();
  const examples = blocks.filter((b) => b.lang === "js" && /\blocation\b/.test(b.code));
  for (const b of examples) {
    writeFileSync(join(src, `readme-${b.i}.js`), forServer(b.code, hostport));
    const bundle = bundleForBrowser(bun, app, `browser/readme-${b.i}.js`, `browser/dist/readme-${b.i}.js`);
    assert.doesNotMatch(bundle, /from\s*"(node:|ws")/, "the browser bundle imports nothing of Node");
    writeFileSync(join(dist, `readme-${b.i}.html`), html(b.heading, `readme-${b.i}.js`));
  }
  const hook = blocks.filter((b) => b.heading === "Preact and React" && b.lang === "jsx");
  assert.equal(hook.length, 1, "the README has one Preact and React example");
  writeFileSync(join(src, "readme-items.jsx"), hook[0].code);
  bundleForBrowser(bun, app, "browser/live.jsx", "browser/dist/live.js");
  writeFileSync(join(dist, "live.html"), html("useLiveTable", "live.js"));
  t.diagnostic(`pack, install and bundles: ${Date.now() - startedAt} ms`);

  // --- the database: web_user (the README's token), a row-level security table ------
  const secret = jwtSecret(psql);
  assert.ok(secret, "the server has a plank.jwt_secret");
  grantWebUser(psql);
  createRlsTable(psql, TABLE, ROLE, "(1, 'one', true), (2, 'two', true), (3, 'three', false)");
  t.after(() => psql(`SET client_min_messages = warning; DROP TABLE IF EXISTS ${TABLE}`));
  const token = (role) => mintJwt({ role, exp: Math.floor(Date.now() / 1000) + 600 }, secret);

  // --- the browser ---------------------------------------------------------------------
  t.after(await acquireLock()); // the worker is terminated below; restart.test.mjs restarts the cluster
  // A response that Playwright made counts as one from a public address, and Chromium's
  // local network access checks would then refuse its WebSockets to the worker's loopback
  // address; a page that the worker serves itself comes from that address.
  const browser = await launchChromium(t, ["--disable-features=LocalNetworkAccessChecks"]);
  const context = await browser.newContext();
  await context.route(`${base}**`, (route) => {
    const file = join(dist, basename(new URL(route.request().url()).pathname));
    return existsSync(file) ? route.fulfill({ path: file }) : route.fulfill({ status: 404, body: "not found" });
  });
  /** A page of the app, with its console, its uncaught errors, and a token when given. */
  async function open(st, file, tokenRole) {
    const page = await context.newPage();
    st.after(() => page.close());
    const errors = [];
    page.on("pageerror", (err) => errors.push(err.message));
    const cons = consoleOf(page);
    if (tokenRole) await page.addInitScript((tk) => { window.PLANK_TEST_TOKEN = tk; }, token(tokenRole));
    const response = await page.goto(base + file, { waitUntil: "load" });
    assert.equal(response?.status(), 200, `GET ${base}${file}`);
    st.after(() => assert.deepEqual(errors, [], "no uncaught errors in the page"));
    return { page, console: cons };
  }
  const itemCount = () => Number(psql("SELECT count(*) FROM public.items"));
  const ids = [];
  t.after(() => { if (ids.length) psql(`DELETE FROM public.items WHERE id IN (${ids.join(", ")})`); });
  const insertItem = (name, value) => {
    const id = psql(`INSERT INTO public.items (name, value) VALUES (${sqlString(name)}, ${value}) RETURNING id`);
    assert.match(id, /^\d+$/);
    ids.push(id);
    return id;
  };
  const tag = (what) => `browser-client-${what}-${Date.now()}`;

  /** page.js's table follows public.items: an insert shows, an update changes, a delete removes. */
  async function followsItems(page, what) {
    const cell = (id, col) => page.locator(`#rows [data-testid="row-${id}"] [data-testid="${col}"]`);
    const has = (id, col, text) => until(page, `row ${id}'s ${col} is ${text}`,
      ([sel, want]) => document.querySelector(sel)?.textContent === want,
      [`#rows [data-testid="row-${id}"] [data-testid="${col}"]`, text]);
    await page.waitForFunction((n) => document.querySelectorAll("#rows tr").length === n, itemCount(), WAIT);
    const name = tag(what);
    const id = insertItem(name, 17);
    await has(id, "name", name);
    await has(id, "value", "17");
    psql(`UPDATE public.items SET value = 42.5 WHERE id = ${id}`);
    await has(id, "value", "42.5");
    assert.equal(await cell(id, "name").textContent(), name);
    psql(`DELETE FROM public.items WHERE id = ${id}`);
    await page.locator(`#rows [data-testid="row-${id}"]`).waitFor({ ...WAIT, state: "detached" });
    assert.equal(await page.locator("#rows tr").count(), itemCount());
  }

  // Every README example that runs in a page has a test here.
  const handlers = {
    "Browser: a live table": async (st, file) => {
      const { page } = await open(st, file);
      await page.locator("#status", { hasText: /^ready$/ }).waitFor(WAIT);
      await followsItems(page, "live");
      assert.equal(await page.locator("#status").textContent(), "ready");
    },
    "The events themselves": async (st, file) => {
      const { page, console: cons } = await open(st, file);
      await cons.waitFor(/^subscribed at \d+$/);
      await followsItems(page, "events");
    },
    "Browser, with a token from your auth provider": async (st, file) => {
      const { page, console: cons } = await open(st, file, "web_user");
      await cons.waitFor(/^signed in as web_user until /);
      await page.waitForFunction(() => Number(document.getElementById("renders").textContent) > 0, null, WAIT);
      assert.equal(await page.locator("#rows tr").count(), itemCount(), "the snapshot: web_user may read every item");
      assert.equal(await page.locator("#signin").textContent(), "", "no sign-in prompt");
    },
  };
  assert.ok(examples.length >= 3, `README examples that run in a page: ${examples.map((b) => b.heading).join(", ")}`);
  for (const b of examples) {
    const handler = handlers[b.heading];
    assert.ok(handler, `no test for the README's browser example under "${b.heading}"`);
    await t.test(`README: ${b.heading} (block ${b.i})`, (st) => handler(st, `readme-${b.i}.html`));
  }

  await t.test("Preact: the README's <Items> and useLiveTable() under row-level security, then a worker restart", async (st) => {
    const { page } = await open(st, "live.html", ROLE);
    const shown = page.locator('[data-testid="shown"]');
    const shownIds = () => shown.locator("tr").evaluateAll((trs) => trs.map((tr) => tr.dataset.testid).sort());
    await page.locator('[data-testid="shown"][data-status="ready"]').waitFor(WAIT);
    assert.deepEqual(await shownIds(), ["shown-1", "shown-2"], "the snapshot has the rows the role may see");
    const items = () => texts(page, '[data-testid="items"] li');
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="items"] li').length === n, itemCount(), WAIT);
    const liHas = (text, present = true, wait = WAIT) => until(page, `<Items> ${present ? "shows" : "no longer shows"} "${text}"`,
      ([want, yes]) => [...document.querySelectorAll('[data-testid="items"] li')].some((li) => li.textContent === want) === yes,
      [text, present], wait);

    // <Items>: insert, update, delete
    const name = tag("hook");
    const id = insertItem(name, 17);
    await liHas(`${name}: 17`);
    psql(`UPDATE public.items SET value = 42.5 WHERE id = ${id}`);
    await liHas(`${name}: 42.5`);
    assert.ok(!(await items()).includes(`${name}: 17`), "the old value is gone");
    psql(`DELETE FROM public.items WHERE id = ${id}`);
    await liHas(`${name}: 42.5`, false);
    assert.equal((await items()).length, itemCount());

    // useLiveTable under row-level security: a row leaves the role's view, one enters it
    const hasRows = (want) => until(page, `the rows of ${TABLE}: ${want.join(", ")}`,
      (w) => JSON.stringify([...document.querySelectorAll('[data-testid="shown"] tr')].map((tr) => tr.dataset.testid).sort()) === w,
      JSON.stringify(want));
    await page.evaluate(() => {
      window.plankTest.hidden = [];
      window.plankTest.reader.on("message", (m) => {
        if (m.type === "change" && m.change.visible === false) window.plankTest.hidden.push(m.change);
      });
    });
    psql(`UPDATE ${TABLE} SET shown = false WHERE id = 2`);
    await hasRows(["shown-1"]);
    assert.deepEqual(await page.evaluate(() => window.plankTest.hidden.map((c) => [c.op, c.visible, c.key, c.new ?? null])),
      [["UPDATE", false, { id: 2 }, null]], "row 2 left with a visible: false change");
    psql(`UPDATE ${TABLE} SET shown = true WHERE id = 3`);
    await hasRows(["shown-1", "shown-3"]);
    assert.equal(await shown.locator('[data-testid="shown-3"] [data-testid="name"]').textContent(), "three");
    psql(`UPDATE ${TABLE} SET name = 'uno' WHERE id = 1`);
    await page.waitForFunction(() => document.querySelector('[data-testid="shown-1"] [data-testid="name"]')?.textContent === "uno", null, WAIT);
    psql(`INSERT INTO ${TABLE} VALUES (4, 'four', true), (5, 'five', false)`);
    await hasRows(["shown-1", "shown-3", "shown-4"]);
    assert.equal(await shown.getAttribute("data-resync"), "");

    // The worker is terminated (it comes back after its restart delay, with a new epoch);
    // rows change while the page has no connection. Both clients reconnect by themselves,
    // the live table resyncs (epoch_changed) to a fresh snapshot.
    const opened = await page.evaluate(() => window.plankTest.events.filter((e) => e.ev === "open").length);
    const killed = psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'plank' AND datname = current_database()");
    assert.equal(killed, "t", "the worker was terminated");
    psql(`BEGIN; DELETE FROM ${TABLE} WHERE id = 4; UPDATE ${TABLE} SET shown = true WHERE id = 5; UPDATE ${TABLE} SET name = 'one again' WHERE id = 1; COMMIT`);
    const laterName = tag("after-restart");
    const later = insertItem(laterName, 7);
    await page.locator('[data-testid="shown"][data-resync="epoch_changed"][data-status="ready"]').waitFor(RECOVER);
    await hasRows(["shown-1", "shown-3", "shown-5"]);
    assert.equal(await shown.locator('[data-testid="shown-1"] [data-testid="name"]').textContent(), "one again");
    await liHas(`${laterName}: 7`, true, RECOVER);
    const events = await page.evaluate(() => window.plankTest.events);
    for (const client of ["anonymous", "reader"]) {
      assert.ok(events.some((e) => e.client === client && e.ev === "closed"), `${client}: closed`);
    }
    assert.ok(events.filter((e) => e.ev === "open").length >= opened + 2, "both clients opened again");
    assert.ok(events.some((e) => e.client === "reader" && e.ev === "auth" && e.role === ROLE), "the reader's token was accepted");
    // live again after the resync
    psql(`UPDATE ${TABLE} SET shown = false WHERE id = 3`);
    await hasRows(["shown-1", "shown-5"]);
    psql(`DELETE FROM public.items WHERE id = ${later}`);
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="items"] li').length === n, itemCount(), WAIT);
  });
  t.diagnostic(`the whole test: ${Date.now() - startedAt} ms`);
});
