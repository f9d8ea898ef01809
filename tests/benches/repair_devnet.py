#!/usr/bin/env python3
# Repair bench on a real devnet (BENCHMARKS.md, "Storage proofs and repair", issue #11).
# BTFS_BIN=<release btfs> python3 tests/benches/repair_devnet.py   (BTFS_BENCH_ROUNDS, default 3;
# BTFS_BENCH_MIB, default 64; WAIT seconds per round, default 600; KEEP=1 keeps the devnet dir).
# btfs devnet --hosts 45; btfs upload --json (guard must be "watching"); wait for a clean audit of
# every shard; delete the blob files of shards 0..12 of every slab (all 10 data shards + 2 parity)
# from their holders; poll `btfs health --json` until repaired_shards counts all of them and every
# slab shows 30; print the Guard log's "repair done" lines; download and compare.
import json, os, subprocess, sys, tempfile, time, hashlib, signal, statistics

BIN = os.environ["BTFS_BIN"]
MIB = 1 << 20
SIZE = int(os.environ.get("BTFS_BENCH_MIB", "64"))
ROUNDS = int(os.environ.get("BTFS_BENCH_ROUNDS", "3"))
LOST = 12


def run_json(args, net):
    o = subprocess.run([BIN] + args + ["--network", net, "--json"], capture_output=True, stdin=subprocess.DEVNULL)
    if o.returncode != 0:
        raise SystemExit(f"btfs {args} failed: {o.stderr.decode()}")
    return json.loads(o.stdout)


def wait_for(secs, what, f):
    deadline = time.monotonic() + secs
    last = 0
    while True:
        done, v = f()
        if done:
            return v
        if v is not None and time.monotonic() - last > 10:
            last = time.monotonic()
            print(f"  [{what}] repaired={v.get('repaired_shards')} healthy={[s['healthy'] for s in v['slabs']]} last_repair={v.get('last_repair')}", flush=True)
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {secs} s waiting for {what}")
        time.sleep(0.2)


def one(seed):
    d = tempfile.mkdtemp(prefix="btfs-repair-")
    log = open(os.path.join(d, "devnet.log"), "w")
    dev = subprocess.Popen([BIN, "devnet", "--hosts", "45", "--dir", d], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        net = os.path.join(d, "network.json")
        wait_for(120, "network.json", lambda: (os.path.exists(net), None))
        time.sleep(0.3)
        hosts = {h["peer_id"]: h["data_dir"] for h in json.load(open(net))["hosts"]}
        src = os.path.join(d, "in.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(SIZE * MIB))
        want = hashlib.blake2b(open(src, "rb").read()).hexdigest()
        rep = run_json(["upload", src], net)
        assert rep["guard"] == "watching", rep
        link = rep["link"]

        def clean():
            h = run_json(["health", link], net)
            return (all(x["passed"] is True for s in h["slabs"] for x in s["shards"]), h)
        h = wait_for(120, "first clean audit", clean)
        slabs = len(h["slabs"])
        paths = []
        for s in h["slabs"]:
            for x in s["shards"][:LOST]:
                r = x["root"]
                paths.append(os.path.join(hosts[x["host"]], "blobs", r[:2], r))
        t0 = time.monotonic()
        for p in paths:
            os.remove(p)
        want_rep = slabs * LOST

        def repaired():
            h = run_json(["health", link], net)
            return (h["repaired_shards"] >= want_rep and all(s["healthy"] == 30 for s in h["slabs"]), h)
        h = wait_for(int(os.environ.get("WAIT", "600")), "every slab back to 30", repaired)
        wall = time.monotonic() - t0
        lr = h["last_repair"]
        done = [l.strip() for l in open(os.path.join(d, "service", "service.log")) if "repair done" in l]
        for l in done:
            print("  guard log:", l)
        out = os.path.join(d, "out.bin")
        o = subprocess.run([BIN, "download", link, "-o", out, "--json", "--network", net], capture_output=True, stdin=subprocess.DEVNULL)
        assert o.returncode == 0, o.stderr
        same = hashlib.blake2b(open(out, "rb").read()).hexdigest() == want
        assert same, "download after repair differs"
        print(f"round {seed}: {slabs} slabs, repaired_shards {h['repaired_shards']} (deleted {want_rep}), {len(done)} repairs; "
              f"last_repair {lr}; wall {wall:.2f} s; download byte-identical", flush=True)
        return lr, wall
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
        if os.environ.get("KEEP"):
            print("kept", d)
        else:
            subprocess.run(["rm", "-rf", d])


rs = [one(i) for i in range(1, ROUNDS + 1)]
med = lambda v: statistics.median(v)
print("guard ms", [r[0]["ms"] for r in rs], "median", med([r[0]["ms"] for r in rs]))
print("wall s", [round(r[1], 2) for r in rs], "median", round(med([r[1] for r in rs]), 2))
for k in ("shards", "bytes_fetched", "bytes_placed"):
    print(k, [r[0][k] for r in rs])
