#!/usr/bin/env bash
# End to end on a real Slurm: munged, slurmctld and two slurmd daemons
# ("nodes" n1 and n2, each with its own port) run on this machine from a
# throw-away configuration; a coordinator runs outside Slurm; the workers
# are submitted with `sbatch deploy/slurm/mpt_workers.sbatch` (one task per
# node), and a small pipeline, its distillation a gang of two spanning both
# nodes, runs to SUCCEEDED. Then the Slurm job is cancelled and the workers
# must stop. When the kernel lets us create device nodes, the nodes also
# get two fake GPUs each (character devices the scheduler can hand out),
# and a second job, with a stand-in for the worker binary that prints what
# it was given, checks that each task gets its own GPU and --device=cuda:0,
# with --gpus-per-task=1 and with --gres=gpu:2 shared by two tasks.
#
# Needs root and Debian's slurmctld, slurmd, slurm-client and munge
# (tools/setup.sh installs them; installing starts no service). Skips itself
# (passes, printing SKIPPED and the reason) when it cannot run: not root, a
# program missing, or the daemons do not start.
set -uo pipefail

skip() {
  echo "SKIPPED: $* (the Slurm test needs root and Debian's slurmctld, slurmd, slurm-client and munge)" >&2
  exit 0
}
[ "$(id -u)" = 0 ] || skip "not running as root"
# The daemons live in /usr/sbin, which a test's PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"
for program in munged slurmctld slurmd sbatch srun scancel squeue sinfo ss; do
  command -v "$program" >/dev/null || skip "no $program on PATH"
done

source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"
SBATCH_SCRIPT="$E2E_RUNFILES/deploy/slurm/mpt_workers.sbatch"
[ -f "$SBATCH_SCRIPT" ] || e2e_fail "no $SBATCH_SCRIPT in the runfiles"

# Unix socket paths must stay short, so the Slurm and munge state lives in
# /tmp rather than under TEST_TMPDIR.
S=$(mktemp -d /tmp/mpt-slurm.XXXXXX)
chmod 755 "$S"
mkdir -p "$S"/{munge-key,munge-run,state,spool,log,work,dev,out}
chmod 700 "$S/munge-key"
export SLURM_CONF="$S/slurm.conf"

# Free TCP ports for slurmctld and the two slurmd, below the kernel's
# ephemeral range: a port from that range can be handed to another test's
# outgoing connection or bind(0) between this check and slurmctld's bind.
used=$(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u)
ephemeral_low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$ephemeral_low" -gt 12000 ] 2>/dev/null || ephemeral_low=32768
ports=()
p=$(( 10000 + RANDOM % (ephemeral_low - 10000 - 100) ))
while [ "${#ports[@]}" -lt 3 ]; do
  if ! grep -qx "$p" <<< "$used"; then ports+=("$p"); fi
  p=$(( p + 1 ))
done
CTLD_PORT=${ports[0]}

declare -A SLURM_DAEMONS=()   # name -> pid; stopped in order by slurm_stop
JOB_IDS=()

slurm_stop() {
  local j
  for j in "${JOB_IDS[@]}"; do scancel "$j" 2>/dev/null || true; done
  # The job's own processes: found by our unique work folder, and their
  # slurmstepd parents.
  local deadline=$(( $(date +%s) + 20 ))
  while ! workers_gone && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
  local pid
  for pid in $(our_task_pids); do kill -KILL "$pid" 2>/dev/null || true; done
  local name
  for name in slurmd-n1 slurmd-n2 slurmctld munged; do
    pid="${SLURM_DAEMONS[$name]:-}"
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for name in "$S"/log/*.log "$S"/out/*.log; do
    [ -f "$name" ] && cp "$name" "$E2E_DIR/logs/slurm-$(basename "$name")" 2>/dev/null
  done
  for name in "$S"/log/*.out; do
    [ -f "$name" ] && cp "$name" "$E2E_DIR/logs/slurm-$(basename "$name" .out)-stdout.log" 2>/dev/null
  done
  rm -rf "$S"
}
E2E_CLEANUP_HOOKS+=("slurm_stop")

# Pids of processes whose command line names our work folder (the workers),
# and of their parents when those are slurmstepd. The match happens inside
# this shell, so no helper process carries the pattern in its own command
# line.
our_task_pids() {
  local f pid ppid cmd
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    cmd=$( { tr '\0' ' ' < "$f"; } 2>/dev/null || true)
    [[ "$cmd" == *"--work_dir=$S/work/"* ]] || continue
    echo "$pid"
    ppid=$( { awk '/^PPid:/ {print $2}' "/proc/$pid/status"; } 2>/dev/null || true)
    cmd=$( { tr '\0' ' ' < "/proc/$ppid/cmdline"; } 2>/dev/null || true)
    if [ -n "$ppid" ] && [[ "$cmd" == slurmstepd* ]]; then echo "$ppid"; fi
  done
}
workers_gone() { [ -z "$(our_task_pids)" ]; }

# --- munge --------------------------------------------------------------------
dd if=/dev/urandom of="$S/munge-key/munge.key" bs=1 count=1024 2>/dev/null
chmod 600 "$S/munge-key/munge.key"
# daemon NAME COMMAND...: starts COMMAND outside this shell's jobs (so that
# e2e_lib's final `wait` does not wait for it) and records its pid.
daemon() {
  local name="$1"
  shift
  (setsid "$@" >> "$S/log/$name.out" 2>&1 < /dev/null & echo $! > "$S/$name.daemon-pid")
  SLURM_DAEMONS[$name]=$(cat "$S/$name.daemon-pid")
}

daemon munged munged --foreground --force --socket="$S/munge-run/munge.sock" \
  --key-file="$S/munge-key/munge.key" --pid-file="$S/munge-run/munged.pid" \
  --seed-file="$S/munge-run/seed" --log-file="$S/log/munged.log"
for _ in $(seq 50); do [ -S "$S/munge-run/munge.sock" ] && break; sleep 0.1; done
[ -S "$S/munge-run/munge.sock" ] || skip "munged did not start ($(tail -n 3 "$S/log/munged.out" 2>/dev/null))"

# --- Slurm configuration --------------------------------------------------------
# Two fake GPUs per node need character devices; without mknod the GPU part
# is skipped.
gres=""
if mknod "$S/dev/gpu0" c 1 3 2>/dev/null && mknod "$S/dev/gpu1" c 1 3 2>/dev/null &&
   mknod "$S/dev/gpu2" c 1 3 2>/dev/null && mknod "$S/dev/gpu3" c 1 3 2>/dev/null; then
  gres=" Gres=gpu:2"
  cat > "$S/gres.conf" <<EOF
AutoDetect=off
NodeName=n1 Name=gpu File=$S/dev/gpu[0-1]
NodeName=n2 Name=gpu File=$S/dev/gpu[2-3]
EOF
else
  e2e_log "cannot create device nodes here; the fake-GPU part will be skipped"
fi
host=$(hostname -s)
{
  [ -z "$gres" ] || echo "GresTypes=gpu"
  cat <<EOF
ClusterName=mpttest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
AuthInfo=socket=$S/munge-run/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd-%n.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[1]} CPUs=2$gres State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[2]} CPUs=2$gres State=UNKNOWN
PartitionName=mpt Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
} > "$SLURM_CONF"

daemon slurmctld slurmctld -D -i -f "$SLURM_CONF"
for n in n1 n2; do daemon "slurmd-$n" slurmd -D -f "$SLURM_CONF" -N "$n"; done
# Each sinfo is bounded (it blocks on a controller that is not there), and
# so is the wait: 30 s, or until slurmctld has exited.
nodes_idle() {
  [ "$(timeout 5 sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle$')" = 2 ]
}
ctld_deadline=$(( SECONDS + 30 ))
while [ "$SECONDS" -lt "$ctld_deadline" ] && kill -0 "${SLURM_DAEMONS[slurmctld]}" 2>/dev/null; do
  nodes_idle && break
  sleep 0.2
done
if ! nodes_idle; then
  sinfo -N 2>&1 | sed 's/^/  /' >&2 || true
  tail -n 5 "$S"/log/*.out >&2 || true
  skip "slurmctld and two slurmd did not come up with both nodes idle"
fi
e2e_log "Slurm up: $(sinfo -h -N -o '%N:%t' | tr '\n' ' ')(slurmctld port $CTLD_PORT)"

# --- coordinator outside Slurm, workers through sbatch ---------------------------
e2e_start_coordinator
out="$S/out/workers-%j.log"
job_id=$(MPT_COORDINATOR="$COORD_ADDR" MPT_BIN="$E2E_RUNFILES/worker" MPT_WORK_DIR="$S/work" \
         GLOO_IFACE=127.0.0.1 \
         MPT_WORKER_FLAGS="--poll_seconds=2 --progress_interval_seconds=0.2 --collective_timeout_seconds=60" \
         sbatch --parsable --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --output="$out" \
         "$SBATCH_SCRIPT") || e2e_fail "sbatch failed"
job_id=${job_id%%;*}
JOB_IDS+=("$job_id")
out="$S/out/workers-$job_id.log"
e2e_log "sbatch: job $job_id"

registered() {
  local json
  json=$(mptctl workers --output=json 2>/dev/null) || return 1
  grep -q '"n1-0"' <<< "$json" && grep -q '"n2-0"' <<< "$json"
}
deadline=$(( $(date +%s) + 60 ))
until registered; do
  if [ -z "$(squeue -h -j "$job_id" 2>/dev/null)" ]; then
    cat "$out" >&2 2>/dev/null || true
    e2e_fail "Slurm job $job_id ended before its workers registered (its log is above)"
  fi
  [ "$(date +%s)" -lt "$deadline" ] ||
    e2e_fail "timed out after 60s waiting for the workers of Slurm job $job_id (n1-0, n2-0) to register"
  sleep 0.3
done
[ "$(squeue -h -j "$job_id" -o %T)" = RUNNING ] || e2e_fail "job $job_id is not RUNNING"
e2e_log "workers registered from nodes $(squeue -h -j "$job_id" -o %N)"

spec=$(SOURCE_TASKS="first last" TARGET_TASKS="echo:echo" WORLD_SIZE=2 SOURCE_STEPS=10 \
       DISTILL_STEPS=10 TARGET_STEPS=10 e2e_write_spec "$E2E_DIR/slurm.textproto")
job=$(mptctl submit --spec "$spec" --name=slurm-pipeline)
e2e_log "submitted $job"
e2e_wait_state "$job" SUCCEEDED 300
for stage in source/first source/last distillation target/echo; do
  [ "$(e2e_stage_field "$job" "$stage" state)" = SUCCEEDED ] || e2e_fail "$stage did not succeed"
done
# The gang of two: one rank in each Slurm task.
grep -q "rank 0 of 2 over gloo" "$out" || e2e_fail "no rank 0 of the gang in the Slurm job's log"
grep -q "rank 1 of 2 over gloo" "$out" || e2e_fail "no rank 1 of the gang in the Slurm job's log"
grep -q "mpt task 0 on n1" "$out" && grep -q "mpt task 1 on n2" "$out" ||
  e2e_fail "the job's log does not show one task on each node"

# Cancelling the Slurm job stops the workers.
scancel "$job_id"
e2e_wait_for 30 "job $job_id to leave the queue" bash -c "[ -z \"\$(squeue -h -j $job_id 2>/dev/null)\" ]"
e2e_wait_for 30 "the workers to exit" workers_gone
e2e_log "job $job_id cancelled; workers gone"

# --- one worker per GPU (fake GPUs, a stand-in worker) ----------------------------
# (sbatch --wait polls only every few seconds.)
wait_job_done() {
  e2e_wait_for 60 "Slurm job $1 to finish" bash -c "[ -z \"\$(squeue -h -j $1 2>/dev/null)\" ]"
}
if [ -n "$gres" ]; then
  mkdir -p "$S/fakebin"
  cat > "$S/fakebin/worker" <<'EOF'
#!/bin/bash
echo "STANDIN node=$SLURMD_NODENAME task=$SLURM_PROCID visible=${CUDA_VISIBLE_DEVICES:-} $*"
EOF
  chmod +x "$S/fakebin/worker"
  for shape in "--gpus-per-task=1" "--gres=gpu:2"; do
    gpu_job=$(MPT_COORDINATOR=127.0.0.1:1 MPT_BIN="$S/fakebin" MPT_WORK_DIR="$S/work" \
              sbatch --parsable --nodes=2 --ntasks-per-node=2 --cpus-per-task=1 $shape \
              --output="$S/out/gpu-%j.log" "$SBATCH_SCRIPT") || e2e_fail "sbatch $shape failed"
    gpu_job=${gpu_job%%;*}
    wait_job_done "$gpu_job"
    log="$S/out/gpu-$gpu_job.log"
    cp "$log" "$E2E_DIR/logs/slurm-gpu-$gpu_job.log"
    [ "$(grep -c '^STANDIN' "$log")" -eq 4 ] || e2e_fail "$shape: expected 4 tasks in $log"
    for n in n1 n2; do
      lines=$(grep "^STANDIN node=$n " "$log" || true)
      [ "$(grep -c -- '--device=cuda:0' <<< "$lines")" -eq 2 ] ||
        e2e_fail "$shape: the tasks on $n did not get --device=cuda:0"
      visible=$(sed -n 's/.* visible=\([^ ]*\) .*/\1/p' <<< "$lines" | sort | tr '\n' ' ')
      [ "$visible" = "0 1 " ] || e2e_fail "$shape: GPUs on $n were '$visible', want one each (0 and 1)"
    done
    e2e_log "$shape: each of 4 tasks on 2 nodes got its own GPU"
  done
  # A CPU-only allocation runs CPU workers.
  cpu_job=$(MPT_COORDINATOR=127.0.0.1:1 MPT_BIN="$S/fakebin" MPT_WORK_DIR="$S/work" \
            sbatch --parsable --nodes=2 --ntasks-per-node=1 --cpus-per-task=2 \
            --output="$S/out/cpu-%j.log" "$SBATCH_SCRIPT") || e2e_fail "sbatch (CPU) failed"
  cpu_job=${cpu_job%%;*}
  wait_job_done "$cpu_job"
  [ "$(grep -c -- '^STANDIN .*--device=cpu .*--threads=2' "$S/out/cpu-$cpu_job.log")" -eq 2 ] ||
    e2e_fail "the CPU-only job did not start two CPU workers with 2 threads"
  e2e_log "a CPU-only allocation starts CPU workers"
else
  e2e_log "SKIPPED the fake-GPU part: cannot create device nodes"
fi
