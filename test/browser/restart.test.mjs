// Browser test: PostgreSQL restarts while the demo page is open. The page must notice,
// reconnect by itself, get a resync (the worker's epoch changed) with a fresh snapshot,
// and show rows written while it was disconnected, without a reload.
//
//   npm ci --prefix test/browser
//   PLANK_URL=http://127.0.0.1:8090/ \
//   PLANK_PSQL='psql -h 127.0.0.1 -p 5433 -U postgres -d plank_demo -v ON_ERROR_STOP=1 -qAt' \
//   PLANK_DATADIR=/var/lib/postgresql/plank-demo \
//   PLANK_PGCTL=/usr/lib/postgresql/15/bin/pg_ctl \
//   PLANK_LOGFILE=/var/lib/postgresql/plank-demo/plank-demo.log \
//   node --test test/browser/
//
// scripts/test.sh exports all of these. The cluster is restarted with
// `pg_ctl -D $PLANK_DATADIR restart -m fast -w` as user postgres (runuser when root,
// sudo otherwise; server output to $PLANK_LOGFILE when set) and left running; if the
// restart fails half-way, the cluster is started again at the end.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { PLANK_URL as URL, acquireLock, launchChromium, psql, skipReason, sqlString } from "./lib.mjs";

const DATADIR = process.env.PLANK_DATADIR;
const PGCTL = process.env.PLANK_PGCTL;
const LOGFILE = process.env.PLANK_LOGFILE;
const SCREENSHOT = process.env.PLANK_RESTART_SCREENSHOT || join(tmpdir(), "plank-browser-restart.png");
const WAIT = { timeout: 10_000 };
const RECOVER = { timeout: 45_000 };

const skip = skipReason || (!DATADIR || !PGCTL ? "set PLANK_DATADIR and PLANK_PGCTL to run the restart test" : false);

/** argv that runs `argv` as the postgres user. */
function asPostgres(argv) {
  if (userInfo().username === "postgres") return argv;
  if (process.getuid?.() === 0) return ["runuser", "-u", "postgres", "--", ...argv];
  return ["sudo", "-n", "-u", "postgres", "--", ...argv];
}

/**
 * pg_ctl as postgres, without blocking this process's event loop (the browser keeps
 * running meanwhile). The postmaster it starts inherits stdout and stderr, so they go to
 * a file, never to a pipe that would stay open.
 */
function pgCtl(args, timeoutMs = 120_000) {
  const out = join(tmpdir(), `plank-restart-pgctl-${process.pid}.log`);
  const fd = openSync(out, "a");
  const logArgs = LOGFILE ? ["-l", LOGFILE] : [];
  const [cmd, ...argv] = asPostgres([PGCTL, "-D", DATADIR, ...args, ...logArgs]);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ["ignore", fd, fd] });
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    const done = (err) => {
      clearTimeout(timer);
      closeSync(fd);
      const text = existsSync(out) ? readFileSync(out, "utf8") : "";
      rmSync(out, { force: true });
      if (err) reject(new Error(`${cmd} ${argv.join(" ")}: ${err}\n${text.slice(-2000)}`));
      else resolve(text);
    };
    child.on("error", (e) => done(e.message));
    child.on("exit", (code, signal) => done(code === 0 ? null : `exit ${code ?? signal}`));
  });
}

async function clusterRunning() {
  try {
    await pgCtl(["status"], 30_000);
    return true;
  } catch {
    return false;
  }
}

test("the page recovers after PostgreSQL restarts: resync, snapshot, rows written meanwhile", { skip, timeout: 240_000 }, async (t) => {
  const release = await acquireLock();
  // Whatever happens below, leave the cluster running; then let other tests in (after
  // hooks run in the order they were added).
  t.after(async () => {
    if (!(await clusterRunning())) {
      t.diagnostic("cluster not running after the test: starting it");
      await pgCtl(["start", "-w", "-t", "60"]);
    }
  });
  t.after(release);

  const browser = await launchChromium(t);

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(err.message));
  page.on("console", (msg) => {
    if (msg.type() === "error") t.diagnostic(`console error: ${msg.text()}`);
  });
  // Every state the page shows, as it changes (the test process stays free meanwhile).
  const states = [];
  await page.exposeFunction("plankTestState", (s) => states.push(s));

  const response = await page.goto(URL, { waitUntil: "load" });
  assert.equal(response?.status(), 200, `GET ${URL}`);
  const connState = page.locator('[data-testid="conn-state"]');
  await page.locator('[data-testid="conn-state"]', { hasText: /^open$/ }).waitFor(WAIT);
  await page.evaluate(() => {
    const el = document.querySelector('[data-testid="conn-state"]');
    window.plankTestState(el.textContent);
    new MutationObserver(() => window.plankTestState(el.textContent))
      .observe(el, { childList: true, characterData: true, subtree: true });
  });
  const epochBefore = await page.locator('[data-testid="epoch"]').textContent();
  assert.match(epochBefore, /^\d+$/);

  const tag = `browser-restart-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const ids = [];
  t.after(() => { if (ids.length) psql(`DELETE FROM public.items WHERE id IN (${ids.join(", ")})`); });
  const insert = (name, value) => {
    const id = psql(`INSERT INTO public.items (name, value) VALUES (${sqlString(name)}, ${value}) RETURNING id`);
    assert.match(id, /^\d+$/, `INSERT ... RETURNING id printed ${JSON.stringify(id)}`);
    ids.push(id);
    return id;
  };
  const cellHas = (id, cell, text, wait = WAIT) => page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent === want,
    [`[data-testid="rows"] [data-testid="row-${id}"] [data-testid="${cell}"]`, text],
    wait,
  );

  // A row written before the restart shows up live.
  const before = insert(`${tag}-before`, 1);
  await cellHas(before, "value", "1");

  // Restart PostgreSQL (and with it the Plank worker) while the page is open. The
  // browser is put offline first: the open WebSocket stays (until the worker closes it),
  // new ones fail, so the page cannot reconnect before the writes below.
  await context.setOffline(true);
  const started = Date.now();
  await pgCtl(["restart", "-m", "fast", "-w", "-t", "60"]);
  t.diagnostic(`pg_ctl restart took ${Date.now() - started} ms`);
  // The page noticed: the worker closed its connection (1001) and retries fail.
  await page.waitForFunction(
    () => document.querySelector('[data-testid="conn-state"]')?.textContent !== "open", null, WAIT);

  // While the page is disconnected: one new row and a change to the old one.
  const after = insert(`${tag}-after`, 2);
  psql(`UPDATE public.items SET value = 11 WHERE id = ${before}`);
  await context.setOffline(false);

  // The page reconnects by itself; "open" again once the subscription is acknowledged.
  await page.waitForFunction(
    () => document.querySelector('[data-testid="conn-state"]')?.textContent === "open" &&
      [...document.querySelectorAll('[data-testid="event-log"] tr')]
        .some((tr) => tr.dataset.op === "RESYNC"),
    null,
    RECOVER,
  );
  assert.ok(states.some((s) => s === "closed" || s === "connecting"),
    `the page showed the connection down (states: ${states.join(" → ")})`);
  t.diagnostic(`connection states: ${states.join(" → ")}`);

  // Both rows, as they are now: from the snapshot that followed the resync.
  await cellHas(after, "name", `${tag}-after`);
  await cellHas(after, "value", "2");
  await cellHas(before, "value", "11");

  const epochAfter = await page.locator('[data-testid="epoch"]').textContent();
  assert.match(epochAfter, /^\d+$/);
  assert.notEqual(epochAfter, epochBefore, "a new worker run, a new epoch");

  // The event log says what happened: the connection closed, then a resync because the
  // epoch changed.
  const log = await page.locator('[data-testid="event-log"] tr').evaluateAll((trs) => trs
    .map((tr) => ({ op: tr.dataset.op, text: [...tr.children].map((td) => td.textContent) })));
  const resync = log.find((e) => e.op === "RESYNC");
  assert.match(resync.text[2], /^RESYNC epoch_changed$/);
  const closedAt = log.findIndex((e) => e.op === "CLOSED");
  assert.ok(closedAt > log.indexOf(resync), "CLOSED logged before (below) the RESYNC");
  assert.equal(log.filter((e) => e.op === "RESUMED").length, 0, "nothing to resume across epochs");
  // The writes made while disconnected came with the snapshot, not as changes.
  const changesOf = (id) => log.filter((e) => e.text[3] === id).map((e) => e.op);
  assert.deepEqual(changesOf(after), [], "the new row came with the snapshot");
  assert.deepEqual(changesOf(before), ["INSERT"], "the update came with the snapshot");
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  t.diagnostic(`screenshot: ${SCREENSHOT}`);

  // Live again: a change after the recovery shows up.
  psql(`UPDATE public.items SET value = 3 WHERE id = ${after}`);
  await cellHas(after, "value", "3");
  psql(`DELETE FROM public.items WHERE id IN (${ids.join(", ")})`);
  await page.locator(`[data-testid="rows"] [data-testid="row-${after}"]`).waitFor({ ...WAIT, state: "detached" });
  await page.locator(`[data-testid="rows"] [data-testid="row-${before}"]`).waitFor({ ...WAIT, state: "detached" });
  ids.length = 0;

  assert.equal(await connState.textContent(), "open");
  assert.deepEqual(pageErrors, [], "no uncaught errors in the page");
});
