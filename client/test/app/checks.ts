// Type checks of @plank-db/client as an app sees it (tsc --noEmit, strict).
import { PlankClient, liveTable, type ChangePayload, type ServerMessage } from "@plank-db/client";
import { useLiveTable } from "@plank-db/client/preact";

interface Todo { id: number; title: string; done: boolean }

const client = new PlankClient("ws://127.0.0.1:1/ws", { autoConnect: false });

// rows typed by a type argument
client.subscribeTable<Todo>("todos", { table: "public.todos", filter: { done: false } }, {
  snapshot: (m) => { const titles: string[] = m.rows.map((r) => r.title); void titles; },
  commit: (tx) => { for (const { change } of tx.changes) describe(change); },
});

// @ts-expect-error: a filter on a column Todo does not have
client.subscribeTable<Todo>("bad", { table: "public.todos", filter: { nope: 1 } });

function describe(c: ChangePayload<Todo>): string {
  if (c.op === "TRUNCATE") return c.partition ? c.partition.table : "all";
  if (c.truncated) return String(c.key?.id);
  if (c.op === "DELETE") {
    // @ts-expect-error: a DELETE has no new row
    void c.new;
    return String(c.old.id);
  }
  if (c.op === "UPDATE" && c.visible === false) {
    // @ts-expect-error: a hidden UPDATE carries no row, only its key
    void c.new.title;
    return String(c.key.id);
  }
  const title: string = c.new.title;
  return title;
}

client.on("message", (m: ServerMessage) => {
  if (m.type === "resync_required") { const r: string = m.reason; void r; }
  if (m.type === "commit") { const x: number = m.xid; void x; }
  if (m.type === "change" && m.commit) { const s: number = m.seq; void s; }
  if (m.type === "welcome") { const e: string = m.epoch; void e; }
});

const table = liveTable<Todo>(client, "live", { table: "public.todos", key: "id" });
const done: boolean[] = table.getSnapshot().rows.map((r) => r.done);
void done;
// @ts-expect-error: the key is a column of Todo
liveTable<Todo>(client, "live2", { table: "public.todos", key: "nope" });

export function useTodos(): string[] {
  const { rows, status } = useLiveTable<Todo>(client, "todos", { table: "public.todos" });
  return status === "ready" ? rows.map((r) => r.title) : [];
}
