#!/usr/bin/env python3
"""filters.py: many subscriptions with distinct filters on one table (bench/run.sh "filters").

Opens --conns WebSocket connections with --subs subscriptions each (--conns x --subs in all,
10,000 by default) to one table, subscription k with a filter of its own:

    ops:   {"value": {"gte": 10k, "lt": 10k + 10}, "name": {"like": "k<k>-%"}}
    plain: {"value": 10k + 5}

then writes --rows single-row transactions (one connection, at --rate rows/s), each row matching
exactly one subscription (a random k), and reports, as key=value lines:

    deliveries, loss            changes received / expected (each row reaches one subscription)
    worker_cpu_s, us_per_change the worker's CPU over the run (/proc/PID/stat), per change
    p50_ms, p99_ms              commit (the writer's return from COMMIT) to the client

Runs on the machine of the cluster (it reads the worker's /proc entry).  Needs psycopg2 and
websockets (Debian python3-psycopg2, python3-websockets).
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import time

import psycopg2
import websockets


def worker_pid(dsn):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'plank' "
                    "AND datname = current_database() ORDER BY pid LIMIT 1")
        return cur.fetchone()[0]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def filter_of(shape, k):
    if shape == "ops":
        return {"value": {"gte": 10 * k, "lt": 10 * k + 10}, "name": {"like": f"k{k}-%"}}
    return {"value": 10 * k + 5}


async def run_phase(args, shape):
    url = f"ws://{args.host}:{args.port}/ws"
    nsubs = args.conns * args.subs
    received = {}
    sockets = []

    async def reader(ws):
        async for raw in ws:
            m = json.loads(raw)
            if m.get("type") == "change":
                received[m["change"]["new"]["id"]] = time.time()

    for c in range(args.conns):
        ws = await websockets.connect(url, max_size=None, ping_interval=None)
        await ws.recv()     # welcome
        for s in range(args.subs):
            k = c * args.subs + s
            await ws.send(json.dumps({"type": "subscribe", "id": f"s{k}", "table": args.table,
                                      "ops": ["INSERT"], "filter": filter_of(shape, k)}))
        for s in range(args.subs):
            reply = json.loads(await ws.recv())
            assert reply.get("type") == "ack", reply
        sockets.append(ws)
    tasks = [asyncio.create_task(reader(ws)) for ws in sockets]

    pid = worker_pid(args.dsn)
    committed = {}

    def write():
        conn = psycopg2.connect(args.dsn)
        conn.autocommit = True
        cur = conn.cursor()
        rnd = random.Random(1)
        start = time.time()
        for i in range(1, args.rows + 1):
            delay = start + i / args.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            k = rnd.randrange(nsubs)
            cur.execute(f"INSERT INTO {args.table} (id, value, name) VALUES (%s, %s, %s)",
                        (i, 10 * k + 5, f"k{k}-row"))
            committed[i] = time.time()
        conn.close()

    cpu0 = cpu_s(pid)
    await asyncio.to_thread(write)
    deadline = time.time() + args.drain
    while len(received) < args.rows and time.time() < deadline:
        await asyncio.sleep(0.05)
    cpu1 = cpu_s(pid)
    for t in tasks:
        t.cancel()
    for ws in sockets:
        await ws.close()
    lat = sorted((received[i] - committed[i]) * 1000 for i in received if i in committed)
    out = {
        "shape": shape,
        "subscriptions": nsubs,
        "rows": args.rows,
        "rate": args.rate,
        "deliveries": len(received),
        "loss": args.rows - len(received),
        "worker_cpu_s": f"{cpu1 - cpu0:.2f}",
        "us_per_change": f"{(cpu1 - cpu0) * 1e6 / args.rows:.1f}",
        "p50_ms": f"{statistics.median(lat):.2f}" if lat else "NA",
        "p99_ms": f"{lat[int(len(lat) * 0.99) - 1]:.2f}" if lat else "NA",
    }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18096)
    ap.add_argument("--dsn", default="host=127.0.0.1 port=5498 dbname=plank_bench user=postgres")
    ap.add_argument("--table", default="public.bench_filters")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--subs", type=int, default=100, help="per connection (plank.max_subscriptions)")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=500, help="rows per second")
    ap.add_argument("--drain", type=float, default=30)
    ap.add_argument("--shapes", default="ops,plain")
    args = ap.parse_args()

    with psycopg2.connect(args.dsn) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(f"DROP TABLE IF EXISTS {args.table}")
        cur.execute(f"CREATE TABLE {args.table} (id int PRIMARY KEY, value int, name text)")
        cur.execute("SELECT plank.track(%s::regclass)", (args.table,))
        # the bench cluster's clients act as plank.anonymous_role
        cur.execute("SELECT current_setting('plank.anonymous_role', true)")
        anon = cur.fetchone()[0]
        if anon:
            cur.execute(f'GRANT SELECT ON {args.table} TO "{anon}"')
    for shape in args.shapes.split(","):
        with psycopg2.connect(args.dsn) as conn, conn.cursor() as cur:
            cur.execute(f"TRUNCATE {args.table}")
        out = asyncio.run(run_phase(args, shape))
        for k, v in out.items():
            print(f"{shape}_{k}={v}")
        print(f"summary {shape}: " + " ".join(f"{k}={v}" for k, v in out.items()), flush=True)


if __name__ == "__main__":
    main()
