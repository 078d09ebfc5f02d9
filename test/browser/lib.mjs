// What the browser tests share: psql, the lock they take turns through, and the system's
// Chromium launched by playwright-core (CHROMIUM, default /usr/bin/chromium; never a
// downloaded browser).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const PLANK_URL = process.env.PLANK_URL;
export const PSQL = process.env.PLANK_PSQL;
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** Why the browser tests cannot run here, or false. */
export const skipReason = !PLANK_URL || !PSQL
  ? "set PLANK_URL and PLANK_PSQL to run the browser test"
  : !existsSync(CHROMIUM) ? `no Chromium at ${CHROMIUM}` : false;

/** Run one SQL statement with the PLANK_PSQL command prefix; returns its trimmed output. */
export function psql(sql) {
  return execFileSync("sh", ["-c", `${PSQL} -c "$PLANK_TEST_SQL"`], {
    env: { ...process.env, PLANK_TEST_SQL: sql },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
}

export const sqlString = (s) => `'${s.replaceAll("'", "''")}'`;

// restart.test.mjs restarts the cluster and client.test.mjs the worker: when a test runner
// runs files in parallel, the tests take turns through this lock (a directory, with the
// holder's pid for stale locks). Returns the function that releases it.
const LOCK = join(tmpdir(), `plank-browser-tests-${PLANK_URL ? new URL(PLANK_URL).port : "none"}.lock`);
export async function acquireLock(timeoutMs = 180_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(join(LOCK, "pid"), String(process.pid));
      return () => rmSync(LOCK, { recursive: true, force: true });
    } catch (e) {
      if (e.code !== "EEXIST") throw e;
      let holder = NaN;
      try { holder = Number(readFileSync(join(LOCK, "pid"), "utf8")); } catch { /* being written */ }
      if (Number.isInteger(holder) && holder > 0) {
        try { process.kill(holder, 0); } catch (k) { if (k.code === "ESRCH") rmSync(LOCK, { recursive: true, force: true }); }
      }
      if (Date.now() > deadline) throw new Error(`lock ${LOCK} held too long by pid ${holder}`);
      await new Promise((r) => setTimeout(r, 200)); // polling a lock held by another process
    }
  }
}

/** Headless Chromium, with more command-line `args`; closed when the test `t` ends. */
export async function launchChromium(t, args = []) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ...args,
    ],
  });
  t.after(() => browser.close());
  return browser;
}
