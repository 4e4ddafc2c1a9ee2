#!/bin/bash
# Measures the memory of a real node holding a 1 GiB firmware image (issue 9, item 8; docs/boot.md, "Memory with
# blobs in files"): RSS idle, after `tandem firmware add`, while 20 curls download it over the boot HTTP port,
# after a restart, and again while 20 download it. Uses ports 27069-27080 on 127.0.0.1 and /tmp/blobs-mem.
# usage: scripts/measure-blob-memory.sh target/release/tandem LABEL
BIN=$1; LABEL=$2
mkdir -p /tmp/blobs-mem; FW=/tmp/blobs-mem/fw1g.bin
[ -f $FW ] || head -c 1073741824 /dev/urandom > $FW
DIR=$(mktemp -d /tmp/blobs-mem/node-XXXX)
PORTS="--api 127.0.0.1:27070 --peer 127.0.0.1:27071 --boot 127.0.0.1:27080 --tftp 127.0.0.1:27069"
rss() { grep -E 'VmRSS|VmHWM' /proc/$1/status | tr -s ' \t' ' ' | tr '\n' ' '; }
start() { $BIN serve --data-dir $DIR/data --name m1 $PORTS > $DIR/serve.log 2>&1 & PID=$!;
  for i in $(seq 1 100); do curl -sf http://127.0.0.1:27070/v1/status >/dev/null && break; sleep 0.2; done; sleep 1; }
stop() { kill $PID; wait $PID 2>/dev/null; }
downloads() {
  CURLS=""
  for i in $(seq 1 20); do curl -s -o /dev/null -w '%{size_download}\n' http://127.0.0.1:27080/boot/v1/firmware/fw1 >> $DIR/sizes & CURLS="$CURLS $!"; done
  peak=0; t0=$(date +%s)
  while kill -0 $CURLS 2>/dev/null || pgrep -f "boot/v1/firmware/fw1" >/dev/null; do r=$(awk '/VmRSS/{print $2}' /proc/$PID/status); [ $r -gt $peak ] && peak=$r; sleep 0.2; done
  wait $CURLS
  echo "$LABEL $1: 20 downloads in $(( $(date +%s) - t0 )) s, sizes: $(sort $DIR/sizes | uniq -c | tr '\n' ' '); peak VmRSS sampled: $((peak/1024)) MiB; $(rss $PID)"; rm -f $DIR/sizes; }
start
echo "$LABEL idle: $(rss $PID)"
/usr/bin/time -f "upload took %e s" $BIN firmware add --server http://127.0.0.1:27070 --version 1 fw1 $FW > $DIR/upload.log 2>&1; tail -1 $DIR/upload.log
echo "$LABEL after upload: $(rss $PID)"
downloads "after upload"
stop
start
echo "$LABEL after restart: $(rss $PID)"
downloads "after restart"
stop
du -sh $DIR/data/* | tr '\n' ' '; echo
rm -rf $DIR
