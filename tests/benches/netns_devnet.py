#!/usr/bin/env python3
# The namespaced network's benchmarks (BENCHMARKS.md, "A real network", issue #13). Needs root.
# BTFS_BIN=<release btfs> python3 tests/benches/netns_devnet.py
#   BTFS_BENCH_MIB (default 256), BTFS_BENCH_ROUNDS (default 3), BTFS_BENCH_RATE_KBIT (default
#   20000: every host's link, each way), BTFS_BENCH_HOSTS (default 30).
#
# 1. Throughput against capacity: a `btfs devnet --netns --host-rate-kbit RATE` (every host in its
#    own namespace, its veth shaped with tc tbf both ways); the tenant's CLI, outside, uploads and
#    downloads a fresh random file of BTFS_BENCH_MIB per round. An upload sends 3 bytes of shards
#    per byte of plaintext (30 shards per 10 of data), a download fetches ~1 (10 of 30, plus
#    hedges): the table gives plaintext MiB/s, the wire MiB/s that means, and its share of the
#    capacity RATE x hosts used.
# 2. Time for a fresh node to be found: a new host (fresh identity, in the root namespace at
#    198.18.0.1) started with only --bootstrap; the time from its start until `btfs hosts` (asked
#    with only --bootstrap) lists it online with a non-zero score, i.e. recommendable. Median of 5.
import json, os, subprocess, tempfile, time, statistics, signal, shutil

BIN = os.environ["BTFS_BIN"]
MIB = 1 << 20
SIZE = int(os.environ.get("BTFS_BENCH_MIB", "256"))
ROUNDS = int(os.environ.get("BTFS_BENCH_ROUNDS", "3"))
RATE = int(os.environ.get("BTFS_BENCH_RATE_KBIT", "20000"))
HOSTS = int(os.environ.get("BTFS_BENCH_HOSTS", "30"))

d = tempfile.mkdtemp(prefix="btfs-netns-")
log = open(os.path.join(d, "devnet.log"), "w")
dev = subprocess.Popen([BIN, "devnet", "--netns", "--hosts", str(HOSTS), "--host-rate-kbit", str(RATE),
                        "--dir", os.path.join(d, "net")],
                       stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
fresh = None
try:
    net = os.path.join(d, "net", "network.json")
    deadline = time.monotonic() + 240
    while not os.path.exists(net):
        if time.monotonic() > deadline or dev.poll() is not None:
            raise SystemExit(f"the devnet did not start; see {d}/devnet.log")
        time.sleep(0.2)
    nf = json.load(open(net))
    boot = next(a for a in nf["hosts"][0]["addrs"] if "/tcp/" in a and "/ws" not in a)
    wallet = os.path.join(d, "wallet.key")
    rows = {"upload": [], "download": []}
    used = []
    for r in range(ROUNDS):
        src = os.path.join(d, f"in-{r}.bin")
        with open(src, "wb") as f:
            for _ in range(SIZE):
                f.write(os.urandom(MIB))
        t0 = time.monotonic()
        o = subprocess.run([BIN, "upload", src, "--network", net, "--wallet", wallet, "--json"],
                           capture_output=True, stdin=subprocess.DEVNULL)
        up = time.monotonic() - t0
        if o.returncode != 0:
            raise SystemExit(f"upload failed: {o.stderr.decode()}")
        rep = json.loads(o.stdout)
        used.append(rep["hosts_used"])
        out = os.path.join(d, f"out-{r}.bin")
        t0 = time.monotonic()
        o = subprocess.run([BIN, "download", rep["link"], "-o", out, "--network", net, "--json"],
                           capture_output=True, stdin=subprocess.DEVNULL)
        down = time.monotonic() - t0
        if o.returncode != 0:
            raise SystemExit(f"download failed: {o.stderr.decode()}")
        if subprocess.run(["cmp", "-s", src, out]).returncode != 0:
            raise SystemExit("downloaded bytes differ")
        os.remove(src)
        os.remove(out)
        rows["upload"].append(up)
        rows["download"].append(down)
        print(f"round {r}: upload {up:.1f} s ({rep['hosts_used']} hosts), download {down:.1f} s", flush=True)
    hosts_used = statistics.median(used)
    cap = RATE * 1000 / 8 / MIB * hosts_used  # MiB/s each way over all the hosts used
    print(f"\n| {SIZE} MiB, {HOSTS} hosts at {RATE / 1000:g} Mbit/s each way | median s | plaintext MiB/s | wire MiB/s | capacity MiB/s ({hosts_used:g} hosts) | wire / capacity |")
    print("|---|---|---|---|---|---|")
    for kind, wire_factor in (("upload", 3.0), ("download", 1.0)):
        t = statistics.median(rows[kind])
        plain = SIZE / t
        wire = plain * wire_factor
        print(f"| {kind} | {t:.1f} | {plain:.1f} | {wire:.1f} | {cap:.1f} | {wire / cap:.2f} |")

    # 2. A fresh node, from its start until tenants can be recommended it.
    found = []
    for r in range(5):
        hd = os.path.join(d, f"fresh-{r}")
        hl = open(os.path.join(d, f"fresh-{r}.log"), "w")
        t0 = time.monotonic()
        fresh = subprocess.Popen([BIN, "host", "--data-dir", hd, "--listen-ip", "198.18.0.1",
                                  "--bootstrap", boot, "--quota", "1GiB",
                                  "--announce-interval-secs", "10", "--report-interval-secs", "10"],
                                 stdout=hl, stderr=hl, stdin=subprocess.DEVNULL)
        while not os.path.exists(os.path.join(hd, "node.json")):
            time.sleep(0.01)
        peer = json.load(open(os.path.join(hd, "node.json")))["peer_id"]
        while True:
            o = subprocess.run([BIN, "hosts", "--json", "--bootstrap", boot, "--network", "/nonexistent"],
                               capture_output=True, stdin=subprocess.DEVNULL)
            listed = [h for h in json.loads(o.stdout or b"[]") if h["peer_id"] == peer]
            if listed and listed[0]["online"] and listed[0]["score"] > 0 and listed[0]["excluded"] is None:
                break
            if time.monotonic() - t0 > 120:
                raise SystemExit("a fresh host was not recommendable within 120 s")
            time.sleep(0.05)
        found.append(time.monotonic() - t0)
        fresh.send_signal(signal.SIGTERM)
        fresh.wait()
        fresh = None
        print(f"fresh host {r}: recommendable after {found[-1] * 1000:.0f} ms", flush=True)
    print(f"\n| fresh host, --bootstrap only → recommendable | median ms | all runs ms |")
    print("|---|---|---|")
    print(f"| Hub probes every 2 s (devnet) | {statistics.median(found) * 1000:.0f} | "
          + ", ".join(f"{x * 1000:.0f}" for x in found) + " |")
finally:
    if fresh is not None:
        fresh.kill()
    os.killpg(dev.pid, signal.SIGTERM)
    try:
        dev.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(dev.pid, signal.SIGKILL)
    shutil.rmtree(d, ignore_errors=True)
