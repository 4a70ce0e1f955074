#!/usr/bin/env bash
# bench/peers.sh: Switchyard against nginx, HAProxy and Caddy (Debian packages) on loopback.
# Interleaved: each repetition runs every case on every target back to back, rotating target order.
# Env: REPS (3), DUR seconds (5), IDLE tunnels (2000), SETTLE (2s: how long the idle cases wait after
# the last tunnel opened before sampling RSS; 10s shows what a quiet proxy gives back), OUT results
# file (/tmp/switchyard-peers-DATE.jsonl), ONLY (all, or idle: the idle cases alone).
# Ports (fixed, loopback): echo 18080, nginx 18081, haproxy 18082, caddy 18083, switchyard 18084,
# switchyard two-hop front 18085 / sidecar 18086, HAProxy two-hop front 18087 / sidecar 18088,
# the handshake floors (bench/floor: goroutines 18092, event loop 18093, coroutines 18094),
# switchyard admin 19901-19903.
set -euo pipefail

REPS=${REPS:-3}
DUR=${DUR:-5}
IDLE=${IDLE:-2000}
SETTLE=${SETTLE:-2s}
ONLY=${ONLY:-all}
[[ $ONLY == all || $ONLY == idle ]] || { echo "peers.sh: ONLY must be all or idle, not $ONLY" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONF="$ROOT/bench/configs"
WORK=$(mktemp -d /tmp/sy-peers.XXXXXX)
OUT=${OUT:-/tmp/switchyard-peers-$(date +%Y%m%d-%H%M%S).jsonl}
BIN_SY="$WORK/switchyard"
BIN_BENCH="$WORK/switchyard-bench"
BIN_FLOOR="$WORK/floor"

die() { echo "peers.sh: $*" >&2; exit 1; }
log() { echo "peers.sh: $*" >&2; }

# --- process bookkeeping: every process started here is killed on exit --------------------------
declare -A PID=()   # process name -> pid of the process start() launched
STARTED=()
cleanup() {
  local p
  for p in "${STARTED[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  sleep 0.5
  for p in "${STARTED[@]:-}"; do
    [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port name pid
  local i
  for i in $(seq 1 100); do
    kill -0 "$3" 2>/dev/null || die "$2 exited during start-up; log: $WORK/$2.log
$(tail -20 "$WORK/$2.log")"
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$2 did not listen on 127.0.0.1:$1 within 10 s; log: $WORK/$2.log"
}
start() { # name port command...
  local name=$1 port=$2; shift 2
  port_free "$port" || die "port $port (for $name) is already in use"
  "$@" >"$WORK/$name.log" 2>&1 &
  local p=$!
  STARTED+=("$p")
  PID[$name]=$p
  wait_port "$port" "$name" "$p"
}
stop() { # name
  local p=${PID[$1]:-}
  [ -z "$p" ] && return 0
  kill "$p" 2>/dev/null || true
  local i; for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "PID[$1]"
}

# --- peers: install if missing -------------------------------------------------------------------
PEERS=()
have_peer() { # name binary package
  if ! command -v "$2" >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then log "skip $1: $2 missing and not root to install $3"; return 1; fi
    log "installing $3"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$3" >"$WORK/apt-$1.log" 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$3" >"$WORK/apt-$1.log" 2>&1 ||
        { log "skip $1: apt-get install $3 failed: $(tail -1 "$WORK/apt-$1.log")"; return 1; }
    fi
  fi
  PEERS+=("$1")
}
have_peer nginx nginx nginx-light || true
have_peer haproxy haproxy haproxy || true
have_peer caddy caddy caddy || true
command -v python3 >/dev/null || die "python3 is needed for the summary"
command -v go >/dev/null || die "go is needed to build switchyard"

# --- build ---------------------------------------------------------------------------------------
log "building switchyard, switchyard-bench and the handshake floors"
(cd "$ROOT" && go build -o "$BIN_SY" ./cmd/switchyard && go build -o "$BIN_BENCH" ./cmd/switchyard-bench &&
  go build -o "$BIN_FLOOR" ./bench/floor) ||
  die "go build failed"
ulimit -n 20000 2>/dev/null || log "could not raise the fd limit to 20000 (now $(ulimit -n))"

# --- targets -------------------------------------------------------------------------------------
# url_of TARGET, start_target TARGET, and pid_of TARGET: the -pid list charged for CPU/RSS.
# switchyard-bench counts each listed process with all its descendants, so nginx's master brings its
# workers, and HAProxy/Caddy their children if they fork; the two-hop chain lists front and sidecar.
url_of() {
  case $1 in
    direct) echo ws://127.0.0.1:18080/ ;; nginx) echo ws://127.0.0.1:18081/ ;;
    haproxy) echo ws://127.0.0.1:18082/ ;; caddy) echo ws://127.0.0.1:18083/ ;;
    switchyard) echo ws://127.0.0.1:18084/ ;; sy-2hop) echo ws://127.0.0.1:18085/ ;;
    hp-2hop) echo ws://127.0.0.1:18087/ ;; floor-go) echo ws://127.0.0.1:18092/ ;;
    floor-loop) echo ws://127.0.0.1:18093/ ;; floor-coro) echo ws://127.0.0.1:18094/ ;;
  esac
}
start_target() {
  case $1 in
    direct) ;;  # the echo app is always up
    nginx) mkdir -p "$WORK/nginx"; start nginx 18081 nginx -p "$WORK/nginx" -c "$CONF/nginx.conf" -e stderr ;;
    haproxy) start haproxy 18082 haproxy -db -f "$CONF/haproxy.cfg" ;;
    caddy) start caddy 18083 env GODEBUG=http2xconnect=1 HOME="$WORK" XDG_DATA_HOME="$WORK" XDG_CONFIG_HOME="$WORK" \
             caddy run --config "$CONF/Caddyfile" --adapter caddyfile ;;
    switchyard) start switchyard 18084 "$BIN_SY" -c "$CONF/switchyard.yaml" ;;
    sy-2hop) start sy-sidecar 18086 "$BIN_SY" -c "$CONF/switchyard-sidecar.yaml"
             start sy-2hop 18085 "$BIN_SY" -c "$CONF/switchyard-front.yaml" ;;
    hp-2hop) start hp-sidecar 18088 haproxy -db -f "$CONF/haproxy-sidecar.cfg"
             start hp-2hop 18087 haproxy -db -f "$CONF/haproxy-front.cfg" ;;
    floor-go) start floor-go 18092 "$BIN_FLOOR" -mode goroutines -listen 127.0.0.1:18092 -upstream 127.0.0.1:18080 ;;
    floor-loop) start floor-loop 18093 "$BIN_FLOOR" -mode eventloop -listen 127.0.0.1:18093 -upstream 127.0.0.1:18080 ;;
    floor-coro) start floor-coro 18094 "$BIN_FLOOR" -mode coroutines -listen 127.0.0.1:18094 -upstream 127.0.0.1:18080 ;;
  esac
}
stop_target() {
  case $1 in
    direct) ;; sy-2hop) stop sy-2hop; stop sy-sidecar ;; hp-2hop) stop hp-2hop; stop hp-sidecar ;;
    *) stop "$1" ;;
  esac
}
pid_of() {
  case $1 in
    direct) echo "${PID[echo]}" ;; sy-2hop) echo "${PID[sy-2hop]},${PID[sy-sidecar]}" ;;
    hp-2hop) echo "${PID[hp-2hop]},${PID[hp-sidecar]}" ;;
    *) echo "${PID[$1]}" ;;
  esac
}

TARGETS=(direct "${PEERS[@]}" switchyard)
# WebSocket over HTTP/2 from the client (RFC 8441, h2c prior knowledge): nginx 1.22 and Caddy 2.6 (built
# with a Go that has no extended CONNECT) cannot take it.
H2TARGETS=(direct switchyard)
# The seed's two-hop deployment (H2 between the hops): Switchyard and HAProxy, the one peer here that
# carries WebSocket over an HTTP/2 upstream (nginx proxies to HTTP/1.x only; Caddy 2.6 has no extended CONNECT).
PAIRS=(sy-2hop)
for p in "${PEERS[@]}"; do [ "$p" = haproxy ] && H2TARGETS+=(haproxy) && PAIRS+=(hp-2hop); done
# The least a Go program can spend on a handshake, per architecture (bench/floor): measured in the
# handshakes case only, to show what Switchyard's design, and nginx's, cost before any feature.
FLOORS=(floor-go floor-loop floor-coro)
start echo 18080 "$BIN_BENCH" -serve 127.0.0.1:18080
restart_all() { local t; for t in "${TARGETS[@]}" "${PAIRS[@]}" "${FLOORS[@]}"; do stop_target "$t"; done
                for t in "${TARGETS[@]}" "${PAIRS[@]}" "${FLOORS[@]}"; do start_target "$t"; done; }
restart_all

# case name | flags | targets
CASES=(
  "echo c=1 64B|-workload echo -conns 1 -size 64|${TARGETS[*]}"
  "echo c=100 1KiB|-workload echo -conns 100 -size 1024|${TARGETS[*]} ${PAIRS[*]}"
  "echo c=1000 64B|-workload echo -conns 1000 -size 64|${TARGETS[*]}"
  "h2 echo c=100 1KiB|-proto h2 -workload echo -conns 100 -size 1024|${H2TARGETS[*]}"
  "bulk 64KiB|-workload bulk -conns 1 -size 65536|${TARGETS[*]} ${PAIRS[*]}"
  "handshakes c=50|-workload handshakes -conns 50|${TARGETS[*]} ${FLOORS[*]}"
)
IDLECASES=(
  "idle n=$IDLE|-workload idle -conns $IDLE -settle $SETTLE|${TARGETS[*]} ${PAIRS[*]}"
  "h2 idle n=$IDLE|-proto h2 -workload idle -conns $IDLE -settle $SETTLE|${H2TARGETS[*]}"
)

: >"$OUT"
run_one() { # case-name flags target rep
  local t=$3 pid; pid=$(pid_of "$t")
  local line
  # shellcheck disable=SC2086
  if line=$("$BIN_BENCH" -url "$(url_of "$t")" -target "$t" $2 -duration "${DUR}s" -pid "$pid" 2>"$WORK/last.err"); then
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["case"]=sys.argv[2]; d["rep"]=int(sys.argv[3]); print(json.dumps(d))' \
      "$line" "$1" "$4" >>"$OUT"
    log "rep $4  $1  $t: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(round(d["ops_per_s"]), "ops/s", d["errors"], "errors")' "$line")"
  else
    log "rep $4  $1  $t: FAILED: $(tail -1 "$WORK/last.err")"
    echo "{\"case\":\"$1\",\"target\":\"$t\",\"rep\":$4,\"failed\":true}" >>"$OUT"
  fi
}
rotate() { # shift the list by $1
  local n=$1; shift; local a=("$@") k=${#a[@]} i
  for ((i = 0; i < k; i++)); do echo "${a[(i + n) % k]}"; done
}
# Warm every target first, unmeasured: a freshly started HAProxy spends ~20% more CPU per HTTP/2
# round trip than the same process after a busy minute (45 vs 33-38 us measured), so the first
# repetition would otherwise compare cold processes with the warm ones of later cases.
warm() { # target flags
  # shellcheck disable=SC2086
  "$BIN_BENCH" -url "$(url_of "$1")" $2 -warmup 0 -duration "${WARM:-3}s" >/dev/null 2>&1 || log "warm-up of $1 failed"
}
[[ $ONLY == idle ]] && CASES=() # the idle cases restart every process anyway: no warm-up either
for t in "${TARGETS[@]}" "${PAIRS[@]}"; do [[ $ONLY == idle ]] || warm "$t" "-workload echo -conns 1000 -size 64"; done
for t in "${H2TARGETS[@]}"; do [[ $ONLY == idle ]] || warm "$t" "-proto h2 -workload echo -conns 100 -size 1024"; done
log "targets warmed"
for ((rep = 1; rep <= REPS; rep++)); do
  for c in "${CASES[@]}"; do
    IFS='|' read -r name flags tl <<<"$c"
    # shellcheck disable=SC2206
    tlist=($tl)
    for t in $(rotate "$((rep - 1))" "${tlist[@]}"); do run_one "$name" "$flags" "$t" "$rep"; done
  done
done
# Idle last, each case of each repetition on freshly restarted processes so freed load memory
# cannot hide growth.
for ((rep = 1; rep <= REPS; rep++)); do
  for c in "${IDLECASES[@]}"; do
    stop echo; start echo 18080 "$BIN_BENCH" -serve 127.0.0.1:18080
    restart_all
    IFS='|' read -r name flags tl <<<"$c"
    # shellcheck disable=SC2206
    tlist=($tl)
    for t in $(rotate "$((rep - 1))" "${tlist[@]}"); do run_one "$name" "$flags" "$t" "$rep"; done
  done
done

log "results: $OUT"
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cases, targets, by = [], [], {}
for r in rows:
    if r["case"] not in cases: cases.append(r["case"])
    if r["target"] not in targets: targets.append(r["target"])
    by.setdefault((r["case"], r["target"]), []).append(r)
def med(rs, k):
    v = [r[k] for r in rs if not r.get("failed") and r.get(k) is not None]
    return statistics.median(v) if v else None
def f(x, nd=0):
    return "-" if x is None else (f"{x:.{nd}f}" if nd else f"{round(x)}")
print("| case | target | runs | median | unit | x direct | p50 us | p99 us | proxy CPU us/op | of it kernel | host busy | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for c in cases:
    idle, bulk = "idle n=" in c, c.startswith("bulk")
    key, unit = ("rss_per_idle_tunnel_kib", "KiB/tunnel") if idle else (("throughput_mib_s", "MiB/s") if bulk else ("ops_per_s", "upgrades/s" if c.startswith("handshakes") else "msgs/s"))
    base = med(by.get((c, "direct"), []), key)
    for t in targets:
        rs = by.get((c, t))
        if not rs: continue
        ok = [r for r in rs if not r.get("failed")]
        m = med(rs, key)
        pid_ok = ok and all(r.get("target_pid") for r in ok)
        # An idle row's "direct" is the echo app's own growth: a ratio to it means nothing.
        ratio = "-" if idle or t == "direct" or not base or m is None else f"{m / base:.2f}"
        if idle and not pid_ok: m = None
        busy = med([r for r in ok if "host_cpu_busy" in r], "host_cpu_busy")  # the machine's busy share
        print(f"| {c} | {t} | {len(ok)}/{len(rs)} | {f(m, 1) if idle else f(m)} | {unit} | {ratio if not idle or m is not None else '-'} "
              f"| {'-' if bulk or idle else f(med(rs, 'p50_us'))} | {'-' if bulk or idle else f(med(rs, 'p99_us'))} "
              f"| {f(med(rs, 'cpu_us_per_op'), 1) if pid_ok else 'n/a'} "
              f"| {f(med(rs, 'cpu_kernel_us_per_op'), 1) if pid_ok and not idle else '-'} "
              f"| {'-' if idle or busy is None else f'{100 * busy:.0f}%'} "
              f"| {sum(r.get('errors', 0) for r in ok)} |")
PY
