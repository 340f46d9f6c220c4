#!/usr/bin/env bash
# Compare icebox with coturn on this machine, in one run: each server its
# own process pinned to one core (SERVER_CPU, default 1), stunload pinned to
# another (LOAD_CPU, default 0). The figure is server CPU-µs per operation,
# read from /proc, median of ROUNDS rounds (default 3), servers alternating
# so that noise on a shared machine hits both. Rates (ops/s) are wall-clock
# and only mean something on an otherwise idle machine.
#
#   make bench            (or: bench/compare.sh; DURATION=5s ROUNDS=5 ...)
set -euo pipefail

cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3s}
HOLD=${HOLD:-5000}    # allocations held for the memory figure; 0 skips it
ONLY=${ONLY:-}        # run only the shapes whose name contains this
GO=${GO:-go}
SECRET=bench-secret-0123456789abcdef

command -v turnserver >/dev/null || { echo "bench: coturn's turnserver is needed (apt-get install coturn)" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

$GO build -o "$dir/icebox" ./cmd/icebox
$GO build -o "$dir/stunload" ./cmd/stunload

# A free port for UDP and TCP alike, from the kernel.
free_port() {
	python3 -c 'import socket
while True:
    t=socket.socket(); t.bind(("127.0.0.1",0)); p=t.getsockname()[1]
    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
    try: u.bind(("127.0.0.1",p)); print(p); break
    except OSError: pass
    finally: t.close(); u.close()'
}

# bench/icebox.yaml and bench/coturn.args are the one copy of both
# servers' settings, shared with turnsrv's BenchmarkVersusCoturnRelay.
fill() { sed -e "s|@PORT@|$1|g" -e "s|@DIR@|$dir|g" -e "s|@SECRET@|$SECRET|g" "$2"; }

# Each starts a server in this shell (not in a $(...) subshell, whose pids
# the cleanup would never see) and leaves its pid last in pids.
start_icebox() {
	fill "$1" bench/icebox.yaml >"$dir/icebox.yaml"
	taskset -c "$SERVER_CPU" "$dir/icebox" -config "$dir/icebox.yaml" >"$dir/icebox.log" 2>&1 &
	pids+=($!)
}

start_coturn() {
	local args
	mapfile -t args < <(fill "$1" bench/coturn.args)
	taskset -c "$SERVER_CPU" turnserver "${args[@]}" >/dev/null 2>&1 &
	pids+=($!)
}

load() { taskset -c "$LOAD_CPU" "$dir/stunload" -secret "$SECRET" "$@"; }

wait_ready() {
	for _ in $(seq 50); do
		if load -addr "$1" -mode binding -clients 1 -window 1 -duration 100ms 2>/dev/null | grep -q 'ops=[1-9]'; then
			return
		fi
		sleep 0.2
	done
	echo "bench: no STUN answer from $1" >&2
	exit 1
}

ice_port=$(free_port); start_icebox "$ice_port"; ice_pid=${pids[-1]}
cot_port=$(free_port); start_coturn "$cot_port"; cot_pid=${pids[-1]}
wait_ready "127.0.0.1:$ice_port"
wait_ready "127.0.0.1:$cot_port"

shapes=(
	"udp-channel-16x16|-mode channel -allocs 16 -window 16"
	"udp-channel-64x1|-mode channel -allocs 64 -window 1"
	"udp-send-16x16|-mode send -allocs 16 -window 16"
	"tcp-channel-16x16|-mode channel -allocs 16 -window 16 -tcp"
	"stun-binding-8x32|-mode binding -clients 8 -window 32"
	"alloc-create-delete-4|-mode alloc -allocs 4"
)
results=$dir/results
: >"$results"
for round in $(seq "$ROUNDS"); do
	for shape in "${shapes[@]}"; do
		name=${shape%%|*}
		args=${shape#*|}
		[[ $name == *"$ONLY"* ]] || continue
		for srv in icebox coturn; do
			if [ $srv = icebox ]; then port=$ice_port pid=$ice_pid; else port=$cot_port pid=$cot_pid; fi
			# shellcheck disable=SC2086
			line=$(load -addr "127.0.0.1:$port" -pid "$pid" -duration "$DURATION" $args)
			echo "round $round $srv $line" >&2
			cpu=$(sed -n 's/.*server_cpu_us\/op=\([0-9.]*\).*/\1/p' <<<"$line")
			rate=$(sed -n 's/.*ops\/s=\([0-9.]*\).*/\1/p' <<<"$line")
			lost=$(sed -n 's/.* lost=\([0-9]*\).*/\1/p' <<<"$line")
			late=$(sed -n 's/.* late=\([0-9]*\).*/\1/p' <<<"$line")
			busy=$(sed -n 's/.* load_busy=\([0-9]*\)%.*/\1/p' <<<"$line")
			echo "$name $srv ${cpu:-nan} ${rate:-0} ${lost:-0} ${late:-0} ${busy:-nan}" >>"$results"
		done
	done
done

# Memory per idle allocation: resident memory before and after HOLD
# allocations, each server fresh.
hold_line() { load -addr "127.0.0.1:$1" -pid "$2" -mode hold -allocs "$HOLD" -duration 2s; }
ice_mem=nan cot_mem=nan
if [ "$HOLD" -gt 0 ]; then
	ice_mem=$(hold_line "$ice_port" "$ice_pid" | sed -n 's/.*server_kib\/alloc=\([0-9.]*\).*/\1/p')
	cot_mem=$(hold_line "$cot_port" "$cot_pid" | sed -n 's/.*server_kib\/alloc=\([0-9.]*\).*/\1/p')
fi

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo
echo "icebox $(git describe --always --dirty 2>/dev/null) vs $(turnserver --version 2>/dev/null | head -1 | sed 's/^/coturn /') on $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)); server on CPU $SERVER_CPU, load on CPU $LOAD_CPU; median of $ROUNDS rounds of $DURATION"
printf '%-24s %14s %14s %7s %12s %12s %10s %10s %11s\n' shape "icebox µs/op" "coturn µs/op" ratio "icebox op/s" "coturn op/s" "lost i/c" "late i/c" "load i/c %"
for shape in "${shapes[@]}"; do
	name=${shape%%|*}
	[[ $name == *"$ONLY"* ]] || continue
	ic=$(awk -v n="$name" '$1==n && $2=="icebox" {print $3}' "$results" | median)
	cc=$(awk -v n="$name" '$1==n && $2=="coturn" {print $3}' "$results" | median)
	ir=$(awk -v n="$name" '$1==n && $2=="icebox" {print $4}' "$results" | median)
	cr=$(awk -v n="$name" '$1==n && $2=="coturn" {print $4}' "$results" | median)
	il=$(awk -v n="$name" '$1==n && $2=="icebox" {s+=$5} END {print s+0}' "$results")
	cl=$(awk -v n="$name" '$1==n && $2=="coturn" {s+=$5} END {print s+0}' "$results")
	is=$(awk -v n="$name" '$1==n && $2=="icebox" {s+=$6} END {print s+0}' "$results")
	cs=$(awk -v n="$name" '$1==n && $2=="coturn" {s+=$6} END {print s+0}' "$results")
	ib=$(awk -v n="$name" '$1==n && $2=="icebox" {print $7}' "$results" | median)
	cb=$(awk -v n="$name" '$1==n && $2=="coturn" {print $7}' "$results" | median)
	ratio=$(awk -v a="$ic" -v b="$cc" 'BEGIN { if (b+0 > 0) printf "%.2f", a/b; else print "nan" }')
	printf '%-24s %14s %14s %7s %12.0f %12.0f %10s %10s %11s\n' "$name" "$ic" "$cc" "${ratio}x" "$ir" "$cr" "$il/$cl" "$is/$cs" "$ib/$cb"
done
printf '%-24s %14s %14s\n' "KiB per idle allocation" "${ice_mem:-nan}" "${cot_mem:-nan}"
echo "(µs/op: server CPU, user+system, all threads, per operation; a relayed operation is a round trip: client to peer and back."
echo " lost: never answered, over all rounds; late: answered after stunload's -timeout, a stall of a process, not a drop;"
echo " load: stunload's own CPU, per cent of its core, median: near 100 the load generator limits the rate.)"
