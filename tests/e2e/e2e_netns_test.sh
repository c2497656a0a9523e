#!/usr/bin/env bash
# End to end (f): the coordinator and two workers on different addresses.
# Each runs in its own network namespace, joined by veth pairs to a bridge
# in a fourth ("switch") namespace, so every gRPC call and every Gloo
# collective of the distillation gang crosses a (virtual) network:
#
#   ns c: coordinator 10.231.X.1 ─┐
#   ns a: worker     10.231.X.2 ─┼─ br0 (ns sw)
#   ns b: worker     10.231.X.3 ─┘
#
# Needs root and network namespaces; where they cannot be made the test says
# so and passes without running (SKIPPED).
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

skip() {
  echo "SKIPPED: $* (the network-namespace test needs root, iproute2 and netns/veth/bridge support)" >&2
  exit 0
}

[ "$(id -u)" = 0 ] || skip "not running as root"
command -v ip >/dev/null || skip "no ip command"

tag="mpt$$"
ns_sw="${tag}sw"; ns_c="${tag}c"; ns_a="${tag}a"; ns_b="${tag}b"
subnet="10.231.$(( $$ % 250 + 1 ))"
namespaces=()
netns_cleanup() {
  local ns pid
  for ns in "${namespaces[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
E2E_CLEANUP_HOOKS+=(netns_cleanup)

ip netns add "$ns_sw" 2>/dev/null || skip "ip netns add failed"
namespaces+=("$ns_sw")
ip -n "$ns_sw" link set lo up
ip -n "$ns_sw" link add br0 type bridge 2>/dev/null || skip "cannot create a bridge"
ip -n "$ns_sw" link set br0 up
host=1
for ns in "$ns_c" "$ns_a" "$ns_b"; do
  ip netns add "$ns" || e2e_fail "ip netns add $ns"
  namespaces+=("$ns")
  ip -n "$ns" link set lo up
  ip -n "$ns" link add eth0 type veth peer name "port$host" netns "$ns_sw" 2>/dev/null ||
    skip "cannot create a veth pair"
  ip -n "$ns" addr add "$subnet.$host/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns_sw" link set "port$host" master br0
  ip -n "$ns_sw" link set "port$host" up
  host=$(( host + 1 ))
done
# reachable NS IP: a TCP connection from NS to IP gets an answer (accepted
# or refused; only a silent network times out). No ping or nc needed.
reachable() {
  local out
  out=$(ip netns exec "$1" timeout 2 bash -c "exec 3<>/dev/tcp/$2/9" 2>&1) && return 0
  [[ "$out" == *refused* ]]
}
e2e_wait_for 10 "the virtual network" reachable "$ns_a" "$subnet.1"
reachable "$ns_b" "$subnet.2" || e2e_fail "b cannot reach a"
e2e_log "namespaces $ns_c, $ns_a, $ns_b on $subnet.0/24 through a bridge in $ns_sw"

e2e_start_coordinator --netns "$ns_c" --listen "$subnet.1"
MPTCTL_NETNS="$ns_c"
e2e_start_worker wa --netns "$ns_a" --gloo_bind="$subnet.2"
e2e_start_worker wb --netns "$ns_b" --gloo_bind="$subnet.3"

# The coordinator is not reachable from this (the root) namespace: the
# traffic really goes through the bridge.
if timeout 3 "$MPTCTL_BIN" --coordinator="$COORD_ADDR" --timeout_seconds=1 workers >/dev/null 2>&1; then
  e2e_fail "the coordinator answered outside its namespace"
fi

spec=$(SOURCE_TASKS="first last count" TARGET_TASKS="echo:echo count2:count" WORLD_SIZE=2 \
       e2e_write_spec "$E2E_DIR/pipeline.textproto")
job=$(mptctl submit --spec "$spec")
e2e_wait_state "$job" SUCCEEDED 240

grep -q "rank 0 of 2 over gloo" "$E2E_DIR"/logs/w[ab].log || e2e_fail "no rank 0 over gloo"
grep -q "rank 1 of 2 over gloo" "$E2E_DIR"/logs/w[ab].log || e2e_fail "no rank 1 over gloo"
[ "$(grep -l "joined gang" "$E2E_DIR/logs/wa.log" "$E2E_DIR/logs/wb.log" | wc -l)" -eq 2 ] ||
  e2e_fail "the gang did not span both namespaces"
mptctl workers | grep -q "wa" || e2e_fail "worker wa is not listed"
mptctl download "$job" --out="$E2E_DIR/adapters" > /dev/null
"$ADAPTER_CHECK_BIN" --model="$E2E_MODEL" "$E2E_DIR/adapters/distillation" \
  "$E2E_DIR/adapters/target/echo" "$E2E_DIR/adapters/target/count2" >&2
