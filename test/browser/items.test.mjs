// Browser end-to-end test of the page Plank serves: rows of public.items inserted,
// updated and deleted with psql show up, change and disappear without a reload.
//
//   npm ci --prefix test/browser
//   PLANK_URL=http://127.0.0.1:8090/ \
//   PLANK_PSQL='psql -h 127.0.0.1 -p 5433 -U postgres -d plank_demo -v ON_ERROR_STOP=1 -qAt' \
//   node --test test/browser/
//
// Drives the system's Chromium (CHROMIUM, default /usr/bin/chromium); never downloads a
// browser. Writes a screenshot to $TMPDIR (or /tmp), or to PLANK_SCREENSHOT when set.
import { test } from "node:test";
import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PLANK_URL as URL, acquireLock, launchChromium, psql, skipReason as skip, sqlString } from "./lib.mjs";

const SCREENSHOT = process.env.PLANK_SCREENSHOT || join(tmpdir(), "plank-browser-screenshot.png");
const WAIT = { timeout: 10_000 };

test("rows inserted, updated and deleted with psql show up live", { skip, timeout: 240_000 }, async (t) => {
  t.after(await acquireLock());
  const browser = await launchChromium(t);

  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(err.message));
  page.on("console", (msg) => {
    if (msg.type() === "error") t.diagnostic(`console error: ${msg.text()}`);
  });

  const response = await page.goto(URL, { waitUntil: "load" });
  assert.equal(response?.status(), 200, `GET ${URL}`);
  // "open" only once the worker acknowledged the subscription: from then on every change
  // is delivered.
  await page.locator('[data-testid="conn-state"]', { hasText: /^open$/ }).waitFor(WAIT);

  const name = `browser-test-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const id = psql(`INSERT INTO public.items (name, value) VALUES (${sqlString(name)}, 17) RETURNING id`);
  assert.match(id, /^\d+$/, `INSERT ... RETURNING id printed ${JSON.stringify(id)}`);
  t.after(() => psql(`DELETE FROM public.items WHERE id = ${id}`)); // if a step below failed

  const row = page.locator(`[data-testid="rows"] [data-testid="row-${id}"]`);
  const cellHas = (cell, text) => page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent === want,
    [`[data-testid="rows"] [data-testid="row-${id}"] [data-testid="${cell}"]`, text],
    WAIT,
  );

  // INSERT: the row appears.
  await row.waitFor(WAIT);
  await cellHas("name", name);
  await cellHas("value", "17");

  // UPDATE: the new value shows in the same row.
  psql(`UPDATE public.items SET value = 42.5 WHERE id = ${id}`);
  await cellHas("value", "42.5");
  assert.equal(await row.locator('[data-testid="name"]').textContent(), name);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  t.diagnostic(`screenshot: ${SCREENSHOT}`);

  // DELETE: the row disappears.
  psql(`DELETE FROM public.items WHERE id = ${id}`);
  await row.waitFor({ ...WAIT, state: "detached" });

  // The event log lists the three changes of this row, newest first.
  const log = page.locator('[data-testid="event-log"] tr');
  await page.waitForFunction(
    (rowId) => [...document.querySelectorAll('[data-testid="event-log"] tr')]
      .filter((tr) => tr.lastElementChild?.textContent === rowId).length >= 3,
    id,
    WAIT,
  );
  const entries = (await log.evaluateAll((trs, rowId) => trs
    .map((tr) => [...tr.children].map((td) => td.textContent))
    .filter((cells) => cells[3] === rowId), id));
  assert.deepEqual(entries.map((cells) => cells[2]), ["DELETE", "UPDATE", "INSERT"]);
  const seqs = entries.map((cells) => Number(cells[1]));
  assert.ok(seqs[0] > seqs[1] && seqs[1] > seqs[2], `seqs increase: ${[...seqs].reverse().join(", ")}`);
  assert.match(await page.locator('[data-testid="last-seq"]').textContent(), /^\d+$/);
  assert.match(await page.locator('[data-testid="epoch"]').textContent(), /\S/);

  assert.equal(await page.locator('[data-testid="conn-state"]').textContent(), "open");
  assert.deepEqual(pageErrors, [], "no uncaught errors in the page");
});
