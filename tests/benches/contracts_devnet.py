#!/usr/bin/env python3
# Upload time with storage contracts vs without, same devnet, same run (BENCHMARKS.md, "Escrow",
# issue #12).
# BTFS_BIN=<release btfs> python3 tests/benches/contracts_devnet.py   (BTFS_BENCH_ROUNDS, default 5;
# BTFS_BENCH_MIB, default 64).
# Two devnets of 30 hosts run side by side: a paid one (hosts store only funded blobs) and one
# started with `--free-storage` (no Escrow: hosts store for free, uploads make no contracts).
# Rounds alternate paid / unpaid uploads of fresh random files (each paid upload signs the offers,
# reserves them in one call, shows each host the Escrow's funding proof, uploads, has 30 contracts
# signed and commits them in one call); prints each time, the medians and the ratio unpaid/paid
# (goal >= 0.9).
import json, os, subprocess, tempfile, time, statistics, signal

BIN = os.environ["BTFS_BIN"]
MIB = 1 << 20
SIZE = int(os.environ.get("BTFS_BENCH_MIB", "64"))
ROUNDS = int(os.environ.get("BTFS_BENCH_ROUNDS", "5"))

d = tempfile.mkdtemp(prefix="btfs-contracts-")
devs = []
for name, extra in (("paid", []), ("free", ["--free-storage"])):
    log = open(os.path.join(d, f"devnet-{name}.log"), "w")
    devs.append(subprocess.Popen([BIN, "devnet", "--hosts", "30", "--dir", os.path.join(d, name)] + extra,
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True))
try:
    net = os.path.join(d, "paid", "network.json")
    unpaid = os.path.join(d, "free", "network.json")
    deadline = time.monotonic() + 240
    while not (os.path.exists(net) and os.path.exists(unpaid)):
        if time.monotonic() > deadline:
            raise SystemExit("the devnets did not start")
        time.sleep(0.2)
    time.sleep(0.5)
    assert "escrow" not in json.load(open(unpaid))["services"]
    wallet = os.path.join(d, "wallet.key")
    times = {"paid": [], "unpaid": []}
    phases = {"offers_ms": [], "reserve_ms": [], "commit_ms": []}
    for r in range(ROUNDS):
        for kind, path in (("paid", net), ("unpaid", unpaid)) if r % 2 == 0 else (("unpaid", unpaid), ("paid", net)):
            src = os.path.join(d, f"in-{kind}-{r}.bin")
            with open(src, "wb") as f:
                f.write(os.urandom(SIZE * MIB))
            t0 = time.monotonic()
            o = subprocess.run([BIN, "upload", src, "--network", path, "--wallet", wallet, "--json"],
                               capture_output=True, stdin=subprocess.DEVNULL)
            took = time.monotonic() - t0
            if o.returncode != 0:
                raise SystemExit(f"upload failed: {o.stderr.decode()}")
            rep = json.loads(o.stdout)
            assert (rep.get("contracts") is not None) == (kind == "paid"), rep.get("contracts")
            if kind == "paid":
                assert rep["contracts"]["committed"] == 30, rep["contracts"]
                for k in phases:
                    phases[k].append(rep["contracts"]["timings"][k])
            times[kind].append(took)
            os.remove(src)
            print(f"round {r} {kind:6} {took:.2f} s", flush=True)
    p, u = statistics.median(times["paid"]), statistics.median(times["unpaid"])
    print(f"\n| {SIZE} MiB upload, 30 hosts | median s | all runs s |")
    print("|---|---|---|")
    print(f"| without contracts | {u:.2f} | {' '.join(f'{t:.2f}' for t in times['unpaid'])} |")
    print(f"| with contracts (30 offers + reserve, 30 contracts + commit) | {p:.2f} | {' '.join(f'{t:.2f}' for t in times['paid'])} |")
    print(f"| speed with / without (goal >= 0.9) | {u / p:.3f} | |")
    print("\n| contract phase of a paid upload | median ms | all runs ms |")
    print("|---|---|---|")
    for k, v in phases.items():
        print(f"| {k[:-3]} | {statistics.median(v):.0f} | {' '.join(str(x) for x in v)} |")
    ledger = subprocess.run([BIN, "ledger", "--network", net, "--json"], capture_output=True).stdout
    print("ledger:", ledger.decode().strip().replace("\n", " "))
finally:
    for dev in devs:
        os.killpg(dev.pid, signal.SIGTERM)
    for dev in devs:
        dev.wait(timeout=60)
