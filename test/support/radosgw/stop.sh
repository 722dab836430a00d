#!/usr/bin/env bash
# Stops the cluster test/support/radosgw/start.sh started in DIR (gateway, then OSD, then monitor), and removes DIR.
set -uo pipefail
dir=$(realpath -m "${1:?usage: stop.sh DIR}")
# Alive and not a zombie (an init that does not reap leaves exited daemons as zombies).
alive() { [ -e "/proc/$1" ] && ! grep -q ') Z' "/proc/$1/stat" 2>/dev/null; }
pids=()
# The daemons delete their pid files as they shut down, so read them all first.
for name in client.rgw osd.0 mon.a; do
  [ -f "$dir/run/$name.pid" ] && pids+=("$(cat "$dir/run/$name.pid")")
done
for pid in "${pids[@]}"; do
  kill "$pid" 2>/dev/null
  for _ in $(seq 20); do alive "$pid" || break; sleep 0.25; done
  alive "$pid" && kill -9 "$pid" 2>/dev/null
done
rm -rf "$dir"
