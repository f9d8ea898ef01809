#!/bin/bash
# A full `btfs upload` of 256 MiB against `btfs upload --resume` after a SIGKILL at half the
# slabs, on a 30-host (paid) devnet, three rounds (BENCHMARKS.md "Resumed uploads").
# Usage: BTFS_BIN=<release btfs> tests/benches/resume_devnet.sh
set -e
B=${BTFS_BIN:?set BTFS_BIN to a release btfs binary}
D=$(mktemp -d /tmp/resume-bench.XXXX)
$B devnet --hosts 30 --dir $D/net > $D/devnet.log 2>&1 &
DEV=$!
trap "kill $DEV 2>/dev/null; sleep 1; rm -rf $D" EXIT
while [ ! -f $D/net/network.json ]; do sleep 0.2; done
sleep 2
export BTFS_WALLET=$D/wallet.key
head -c $((256*1024*1024)) /dev/urandom > $D/f.bin
for round in 1 2 3; do
  s=$(date +%s.%N); $B upload --json $D/f.bin --network $D/net/network.json > $D/full.json; e=$(date +%s.%N)
  full=$(echo "$e - $s" | bc)
  $B upload $D/f.bin --network $D/net/network.json > /dev/null 2>&1 &
  P=$!
  J=""
  while true; do
    J=$(ls $D/wallet.key.uploads/*.journal 2>/dev/null | head -1)
    if [ -n "$J" ] && [ $(($(wc -l < $J) - 1)) -ge 13 ]; then kill -9 $P; break; fi
    sleep 0.01
  done
  wait $P 2>/dev/null || true
  placed=$(($(wc -l < $J) - 1))
  s=$(date +%s.%N); $B upload --resume --json $D/f.bin --network $D/net/network.json > $D/res.json; e=$(date +%s.%N)
  res=$(echo "$e - $s" | bc)
  echo "round $round: full upload ${full}s; killed after $placed of 26 slabs; resume ${res}s, resumed_shards $(grep -o '"resumed_shards": [0-9]*' $D/res.json)"
done
