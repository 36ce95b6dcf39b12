#!/bin/bash
# `hourglass check` (no --read-data) of a 10 GiB object-store repository: the size issue 16
# names, too slow to build inside `make bench` (10 GiB of random data, about 2 min to back up).
# A private radosgw (tests/s3server.sh) with a 16 GiB OSD; run as root from the checkout:
#   bench/s3-check-10g.sh [WORKDIR]      (needs about 30 GiB free there)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$ROOT/bench/work/s3-check-10g}
mkdir -p "$WORK" && cd "$WORK"
export S3_DIR=$WORK/srv S3_PORT=17590 CEPH_MON_PORT=13390 CEPH_OSD_BYTES=$((16*1024*1024*1024))
eval "$("$ROOT"/tests/s3server.sh start)"
trap '"$ROOT"/tests/s3server.sh stop >/dev/null 2>&1 || true' EXIT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export HOURGLASS_PASSPHRASE="check measurement passphrase"
HG=$ROOT/.venv/bin/hourglass
if [ ! -f src.img ]; then
  echo "making 10 GiB of random data $(date +%T)"
  # AES-CTR of zeros: incompressible, unique, fast (head ends openssl with SIGPIPE)
  { openssl enc -aes-128-ctr -pass pass:x -nosalt -pbkdf2 -in /dev/zero 2>/dev/null || true; } |
    head -c $((10 * 1024 * 1024 * 1024)) > src.img
fi
$HG init --s3-endpoint "$S3_ENDPOINT" s3://big
echo "backup start $(date +%T)"
/usr/bin/time -f "backup %e s %M KB" $HG backup --s3-endpoint "$S3_ENDPOINT" --repo s3://big src.img --progress none --check none
for i in 1 2 3; do
  /usr/bin/time -f "check %e s %M KB" $HG check --s3-endpoint "$S3_ENDPOINT" --repo s3://big
done
$HG info --s3-endpoint "$S3_ENDPOINT" --repo s3://big | head -20
