#!/usr/bin/env bash
# Starts a one-node Ceph cluster with an S3 gateway (radosgw) on loopback, for the tests: one monitor, one OSD on
# memstore (RAM, nothing on disk but the monitor's store), no cephx ("auth none") and plain crc on the wire. Not a
# production setup: it exists so the S3 code runs against a real S3 server as well as s3rver.
#
#   test/support/radosgw/start.sh DIR   -> prints one JSON line {"endpoint","accessKeyId","secretAccessKey","region"}
#   test/support/radosgw/stop.sh DIR    -> stops it
#
# Needs Debian's ceph-mon, ceph-osd, radosgw and ceph-common packages (.ci/run installs them).
set -euo pipefail
dir=$(realpath -m "${1:?usage: start.sh DIR}")
mkdir -p "$dir"/{mon,osd,run,log}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mon_port=$(free_port)
rgw_port=$(free_port)
fsid=$(cat /proc/sys/kernel/random/uuid)
conf="$dir/ceph.conf"

cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 1
osd crush chooseleaf type = 0
[mon.a]
mon data = $dir/mon
[osd.0]
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = 1073741824
osd max object name len = 1024
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
rgw dns name = 127.0.0.1
CONF

ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
ceph-mon -c "$conf" -i a

ceph() { command ceph -c "$conf" --connect-timeout 20 "$@"; }
osd_id=$(ceph osd create)
ceph-osd -c "$conf" -i "$osd_id" --mkfs 2>>"$dir/log/osd-mkfs.log"
ceph-osd -c "$conf" -i "$osd_id"

radosgw -c "$conf" -n client.rgw

# The gateway sets up its zone and pools before it listens.
for _ in $(seq 120); do
  (exec 3<>"/dev/tcp/127.0.0.1/$rgw_port") 2>/dev/null && break
  sleep 0.5
done
(exec 3<>"/dev/tcp/127.0.0.1/$rgw_port") 2>/dev/null || { echo "radosgw did not listen on 127.0.0.1:$rgw_port; see $dir/log" >&2; exit 1; }

access_key=$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \n')
secret_key=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
radosgw-admin -c "$conf" -n client.admin user create --uid=kdn-test --display-name="kdn tests" \
  --access-key="$access_key" --secret-key="$secret_key" >/dev/null
printf '{"endpoint":"http://127.0.0.1:%s","accessKeyId":"%s","secretAccessKey":"%s"}\n' "$rgw_port" "$access_key" "$secret_key"
