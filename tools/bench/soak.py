#!/usr/bin/env python3
"""Soak benchmark of a coordinator and its workers on loopback (not in CI).

    bazel build //server:coordinator //worker:worker //cli:mptctl
    python3 -m pip install --no-build-isolation ./python      # mpt_client
    python3 tools/bench/soak.py --minutes 10 --clients 50 --watchers 200 --workers 3

Starts a coordinator and --workers workers on 127.0.0.1 with their state in
--run_dir (default out/soak/<time>), then for --minutes:

  - --clients client threads submit small jobs (a tiny pipeline over
    tests/testdata/t5_relu and single-stage source jobs, a few steps each),
    every one with its own request_id, retried with the same id after
    UNAVAILABLE / DEADLINE_EXCEEDED; between submissions they call GetJob
    and ListJobs. At most --max_unfinished acknowledged jobs are unfinished
    at a time, so the queue stays bounded;
  - --watchers threads each keep a WatchJob stream open on some unfinished
    job, reopening it after the last sequence seen when it drops, until the
    job's final event, then take another job;
  - at seeded random moments (every --fault_min..--fault_max s) a worker or
    the coordinator is killed with SIGKILL and started again (the
    coordinator on the same port, database and artefact folder);
  - the coordinator's VmRSS is read from /proc every --rss_every s.

Then it waits (at most --drain_seconds) for the jobs still unfinished,
cancels what is left, and prints: jobs submitted / acknowledged / finished by
state; lost jobs (acknowledged, then unknown to the coordinator); duplicates
(two jobs for one request_id, seen either by the client or in ListJobs, where
every job's display_name carries its request_id); watch streams that ended
without a final state; and the coordinator's memory over time with a verdict.
Exit status 0 when nothing was lost, duplicated or left without a final
event, 1 otherwise. Every loop is bounded in count and time; all processes it
started are killed when it ends, however it ends.
"""

import argparse
import collections
import datetime
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import grpc

try:
    from mpt_client import Client, errors
    from mpt_client.client import FINAL_STATES, JobState, state_name
    from mpt_client._gen import service_pb2, service_pb2_grpc
except ImportError as e:  # pragma: no cover
    sys.exit("soak.py needs the mpt_client package (python3 -m pip install "
             "--no-build-isolation ./python): %s" % e)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(REPO, "tests/testdata/t5_relu")
TASKS = os.path.join(REPO, "tests/testdata/tiny_tasks")


def log(msg):
    print("[soak %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def task(name, data=None):
    data = data or name
    return {"name": name, "trainPath": "%s/%s.train.jsonl" % (TASKS, data),
            "evalPath": "%s/%s.eval.jsonl" % (TASKS, data)}


def train(steps):
    return {"steps": steps, "batchSize": 4, "checkpointEvery": max(1, steps // 2),
            "maxEvalExamples": 4}


def pipeline_spec(steps):
    return {"baseModel": MODEL, "prompt": {"numVirtualTokens": 4},
            "source": {"tasks": [task("first"), task("last")], "train": train(steps)},
            "distillation": {"train": train(steps), "worldSize": 1},
            "target": {"tasks": [task("echo")], "train": train(steps)}}


def source_spec(steps, name):
    return {"baseModel": MODEL, "prompt": {"numVirtualTokens": 4},
            "source": {"tasks": [task(name)], "train": train(steps)}}


# ------------------------------------------------------------------ processes

class Cluster:
    """The coordinator and workers, started and killed by pid."""

    def __init__(self, args):
        self.args = args
        self.run_dir = args.run_dir
        self.logs = os.path.join(self.run_dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.port = 0
        self.coordinator = None
        self.workers = {}
        self.lock = threading.Lock()
        self.coordinator_starts = 0
        self.worker_starts = collections.Counter()

    def _spawn(self, name, argv):
        path = os.path.join(self.logs, name + ".log")
        f = open(path, "ab")
        f.write(("===== start %s =====\n" % time.strftime("%H:%M:%S")).encode())
        f.flush()
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL), path, f

    def start_coordinator(self):
        bin_ = os.path.join(self.args.bin, "server/coordinator")
        state = os.path.join(self.run_dir, "coordinator")
        argv = [bin_, "--listen=127.0.0.1:%d" % self.port, "--db=%s/jobs.db" % state,
                "--artifacts=%s/artifacts" % state, "--lease_seconds=%g" % self.args.lease_seconds,
                "--heartbeat_seconds=%g" % self.args.heartbeat_seconds, "--check_spec_files"]
        path = os.path.join(self.logs, "coordinator.log")
        start_size = os.path.getsize(path) if os.path.exists(path) else 0
        proc, path, f = self._spawn("coordinator", argv)
        deadline = time.monotonic() + 60
        while True:
            with open(path, "rb") as g:
                g.seek(start_size)
                m = re.findall(rb"listening on .*\(port (\d+)", g.read())
            if m:
                self.port = int(m[-1])
                break
            if proc.poll() is not None:
                raise RuntimeError("the coordinator exited at start (see %s)" % path)
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the coordinator did not start listening (see %s)" % path)
            time.sleep(0.1)
        with self.lock:
            self.coordinator = (proc, f)
            self.coordinator_starts += 1
        return proc.pid

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def coordinator_pid(self):
        with self.lock:
            return self.coordinator[0].pid if self.coordinator else None

    def start_worker(self, i):
        name = "w%d" % i
        bin_ = os.path.join(self.args.bin, "worker/worker")
        argv = [bin_, "--coordinator=%s" % self.address,
                "--work_dir=%s" % os.path.join(self.run_dir, "workers", name),
                "--threads=1", "--poll_seconds=1", "--progress_interval_seconds=0.5",
                "--hostname=%s" % name, "--collective_timeout_seconds=60"]
        proc, _, f = self._spawn(name, argv)
        with self.lock:
            self.workers[i] = (proc, f)
            self.worker_starts[i] += 1
        return proc.pid

    @staticmethod
    def _kill(entry):
        proc, f = entry
        try:
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        f.close()

    def kill_coordinator(self):
        with self.lock:
            entry, self.coordinator = self.coordinator, None
        if entry:
            self._kill(entry)

    def kill_worker(self, i):
        with self.lock:
            entry = self.workers.pop(i, None)
        if entry:
            self._kill(entry)

    def stop_all(self):
        for i in list(self.workers):
            self.kill_worker(i)
        self.kill_coordinator()


# ------------------------------------------------------------------ the load

class Ledger:
    """What the clients did, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.submitted = {}       # request_id -> kind
        self.acked = {}           # request_id -> job name
        self.gave_up = {}         # request_id -> last error
        self.client_dups = []     # (request_id, first name, other name)
        self.unfinished = set()   # acknowledged job names not yet seen final
        self.final_seen = {}      # job name -> state seen by a client or watcher
        self.rpc = collections.Counter()
        self.rpc_errors = collections.Counter()
        self.submit_retries = 0
        self.watch = collections.Counter()
        self.watch_bad = []       # (job, why)
        self.drop_details = collections.Counter()   # why streams were reopened
        self.t0 = time.monotonic()

    def note_final(self, name, state):
        with self.lock:
            self.final_seen[name] = state
            self.unfinished.discard(name)


def rpc_error_name(e):
    code = getattr(e, "code", None)
    if callable(code):
        code = code()
    return getattr(code, "name", type(e).__name__)


def client_loop(idx, args, cluster, ledger, stop, rng_seed):
    rng = random.Random(rng_seed)
    client = Client(cluster.address, timeout=10, submit_attempts=1)
    seq = 0
    try:
        while not stop.is_set():
            with ledger.lock:
                may_submit = len(ledger.unfinished) < args.max_unfinished
                known = list(ledger.acked.values())
            r = rng.random()
            try:
                if may_submit and r < 0.5:
                    seq += 1
                    request_id = "soak-%d-%d-%08x" % (idx, seq, rng.getrandbits(32))
                    submit(client, args, ledger, rng, request_id, stop)
                elif known and r < 0.8:
                    name = rng.choice(known)
                    ledger.rpc["GetJob"] += 1
                    job = client.get(name)
                    if job.state in FINAL_STATES:
                        ledger.note_final(job.name, job.state)
                else:
                    ledger.rpc["ListJobs"] += 1
                    states = rng.choice([(), ("RUNNING",), ("QUEUED",), ("SUCCEEDED",)])
                    request = service_pb2.ListJobsRequest(
                        page_size=rng.choice([10, 50, 200]),
                        states=[JobState.Value(s) for s in states])
                    client._call(client._stub.ListJobs, request)
            except errors.MptError as e:
                ledger.rpc_errors[rpc_error_name(e)] += 1
            stop.wait(rng.uniform(0.5, 1.5) * args.think_seconds)
    finally:
        client.close()


def submit(client, args, ledger, rng, request_id, stop):
    """One submission, retried with the same request_id until answered (or
    --submit_retry_seconds pass)."""
    kind = "pipeline" if rng.random() < args.pipeline_share else "source"
    if kind == "pipeline":
        spec = pipeline_spec(args.steps)
    else:
        spec = source_spec(args.steps, rng.choice(["first", "last", "count", "echo"]))
    with ledger.lock:
        ledger.submitted[request_id] = kind
    deadline = time.monotonic() + args.submit_retry_seconds
    backoff = 0.25
    names = []
    while True:
        ledger.rpc["SubmitJob"] += 1
        try:
            job = client.submit(spec, kind=kind, request_id=request_id,
                                display_name=request_id, base_dir=REPO)
            names.append(job.name)
            break
        except errors.Unavailable as e:   # DEADLINE_EXCEEDED too
            ledger.rpc_errors["SubmitJob " + rpc_error_name(e)] += 1
            if time.monotonic() > deadline:
                with ledger.lock:
                    ledger.gave_up[request_id] = str(e)
                return
            ledger.submit_retries += 1
            time.sleep(backoff)
            backoff = min(backoff * 2, 4.0)
        except errors.MptError as e:
            ledger.rpc_errors["SubmitJob " + rpc_error_name(e)] += 1
            with ledger.lock:
                ledger.gave_up[request_id] = str(e)
            return
    # Now and then the same request again, as a client whose answer was lost
    # would send it: it must name the same job.
    if rng.random() < args.resubmit_share:
        try:
            ledger.rpc["SubmitJob"] += 1
            again = client.submit(spec, kind=kind, request_id=request_id,
                                  display_name=request_id, base_dir=REPO)
            names.append(again.name)
        except errors.MptError as e:
            ledger.rpc_errors["SubmitJob(resend) " + rpc_error_name(e)] += 1
    with ledger.lock:
        ledger.acked[request_id] = names[0]
        ledger.unfinished.add(names[0])
        for other in names[1:]:
            if other != names[0]:
                ledger.client_dups.append((request_id, names[0], other))


def watcher_loop(idx, args, cluster, ledger, stop, rng_seed, current):
    rng = random.Random(rng_seed)
    channel = grpc.insecure_channel(cluster.address)
    stub = service_pb2_grpc.JobServiceStub(channel)
    try:
        while not stop.is_set():
            with ledger.lock:
                pool = sorted(ledger.unfinished)
            if not pool:
                stop.wait(0.5)
                continue
            name = rng.choice(pool)
            watch_one(stub, name, args, ledger, stop, current)
            stop.wait(rng.uniform(0.05, 0.3))
    finally:
        call = current[0]
        if call is not None:
            call.cancel()
        channel.close()


def watch_one(stub, name, args, ledger, stop, current):
    """Watches `name` to its final event, reopening the stream after drops.
    Records the outcome in ledger.watch."""
    last = 0
    reopened = 0
    lost_since = None
    backoff = 0.25
    ledger.watch["streams"] += 1
    while not stop.is_set():
        call = stub.WatchJob(service_pb2.WatchJobRequest(name=name, after_sequence=last))
        current[0] = call
        try:
            for event in call:
                lost_since = None
                backoff = 0.25
                if event.sequence <= last:
                    ledger.watch["repeated events"] += 1
                    continue
                if event.sequence != last + 1:
                    ledger.watch["sequence gaps"] += 1
                last = event.sequence
                if event.state in FINAL_STATES:
                    ledger.watch["ended with a final state"] += 1
                    ledger.note_final(name, event.state)
                    return
            why = "closed without a final event"
        except grpc.RpcError as e:
            code = e.code()
            if stop.is_set():
                break
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                ledger.watch["ended without a final state"] += 1
                with ledger.lock:
                    ledger.watch_bad.append((name, "at %.0fs, %d reopenings before: %s: %s" % (
                        time.monotonic() - ledger.t0, reopened, code.name, e.details())))
                return
            why = code.name
            with ledger.lock:
                ledger.drop_details["%s: %s" % (code.name, (e.details() or "")[:100])] += 1
        finally:
            current[0] = None
            call.cancel()
        if stop.is_set():
            break
        ledger.watch["reopened (%s)" % why] += 1
        reopened += 1
        now = time.monotonic()
        if lost_since is None:
            lost_since = now
        elif now - lost_since > args.watch_reconnect_seconds:
            ledger.watch["ended without a final state"] += 1
            with ledger.lock:
                ledger.watch_bad.append((name, "no event for %ds (%s)"
                                         % (args.watch_reconnect_seconds, why)))
            return
        stop.wait(backoff)
        backoff = min(backoff * 2, 4.0)
    ledger.watch["stopped by the soak at its end"] += 1


# ------------------------------------------------------------------ faults, memory

def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def rss_loop(args, cluster, samples, t0, stop):
    while not stop.is_set():
        pid = cluster.coordinator_pid()
        if pid:
            kb = rss_kb(pid)
            if kb is not None:
                samples.append((time.monotonic() - t0, pid, kb))
        stop.wait(args.rss_every)


def fault_loop(args, cluster, faults, t0, stop, client_stop):
    rng = random.Random(args.seed)
    while True:
        wait = rng.uniform(args.fault_min, args.fault_max)
        if stop.wait(wait) or client_stop.is_set():
            return
        t = time.monotonic() - t0
        if rng.random() < args.coordinator_share:
            old = cluster.coordinator_pid()
            cluster.kill_coordinator()
            down = rng.uniform(0.5, 3.0)
            time.sleep(down)
            try:
                pid = cluster.start_coordinator()
            except RuntimeError as e:
                faults.append((t, "coordinator", "restart failed: %s" % e))
                log("coordinator restart FAILED: %s" % e)
                stop.set()
                return
            faults.append((t, "coordinator", "pid %d killed, down %.1fs, now pid %d"
                           % (old, down, pid)))
            log("killed the coordinator (pid %d), restarted as pid %d" % (old, pid))
        else:
            i = rng.randrange(args.workers)
            old = cluster.workers[i][0].pid if i in cluster.workers else 0
            cluster.kill_worker(i)
            down = rng.uniform(0.5, 3.0)
            time.sleep(down)
            pid = cluster.start_worker(i)
            faults.append((t, "worker w%d" % i, "pid %d killed, down %.1fs, now pid %d"
                           % (old, down, pid)))
            log("killed worker w%d (pid %d), restarted as pid %d" % (i, old, pid))


def memory_report(samples, restarts, out_png):
    """Lines describing the coordinator's RSS, and the verdict."""
    lines = []
    if not samples:
        return ["no RSS samples"], "unknown"
    mb = [kb / 1024 for _, _, kb in samples]
    lines.append("coordinator RSS: first %.1f MB, last %.1f MB, peak %.1f MB (%d samples, %d pids)"
                 % (mb[0], mb[-1], max(mb), len(samples), len({p for _, p, _ in samples})))
    # A table: one row per ~10% of the run, and one per process start.
    lines.append("  %8s %8s %9s" % ("t (s)", "pid", "RSS (MB)"))
    step = max(1, len(samples) // 12)
    shown = set(range(0, len(samples), step)) | {len(samples) - 1}
    for k in range(1, len(samples)):
        if samples[k][1] != samples[k - 1][1]:
            shown |= {k - 1, k}
    for k in sorted(shown):
        t, pid, kb = samples[k]
        lines.append("  %8.0f %8d %9.1f" % (t, pid, kb / 1024))
    # Verdict per process lifetime: growth between the first and the last
    # quarter of its samples (after 15 s of warm-up).
    by_pid = collections.OrderedDict()
    for t, pid, kb in samples:
        by_pid.setdefault(pid, []).append((t, kb / 1024))
    verdict = "flat"
    judged = 0
    for pid, seg in by_pid.items():
        start = seg[0][0]
        seg = [(t, m) for t, m in seg if t - start >= 15]
        if len(seg) < 8 or seg[-1][0] - seg[0][0] < 45:
            lines.append("  pid %d: %d s, too short to judge" % (pid, (seg[-1][0] - start) if seg else 0))
            continue
        judged += 1
        q = max(2, len(seg) // 4)
        head = statistics.median(m for _, m in seg[:q])
        tail = statistics.median(m for _, m in seg[-q:])
        span_min = (seg[-1][0] - seg[0][0]) / 60
        growth = tail - head
        ok = growth <= max(8.0, 0.10 * head)
        lines.append("  pid %d: %.1f min judged, median %.1f -> %.1f MB (%+.1f MB, %+.2f MB/min): %s"
                     % (pid, span_min, head, tail, growth, growth / span_min,
                        "flat" if ok else "GROWING"))
        if not ok:
            verdict = "growing"
    if judged == 0:
        verdict = "not judged (no coordinator lifetime long enough)"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for pid, seg in by_pid.items():
            pts = [(t, kb / 1024) for t, p, kb in samples if p == pid]
            ax.plot([t for t, _ in pts], [m for _, m in pts], label="pid %d" % pid)
        for t in restarts:
            ax.axvline(t, color="grey", lw=0.5, ls="--")
        ax.set_xlabel("seconds")
        ax.set_ylabel("coordinator VmRSS (MB)")
        ax.set_ylim(bottom=0)
        if len(by_pid) <= 8:
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out_png, dpi=100)
        lines.append("plot: %s" % out_png)
    except Exception as e:  # matplotlib missing or broken: the table suffices
        lines.append("(no plot: %s)" % e)
    return lines, verdict


# ------------------------------------------------------------------ the end

def drain(args, cluster, ledger):
    """Waits for the unfinished acknowledged jobs (at most --drain_seconds),
    then cancels those left and waits a little for them to end."""
    client = Client(cluster.address, timeout=10)
    deadline = time.monotonic() + args.drain_seconds
    cancelled = []
    try:
        while True:
            pending = []
            with ledger.lock:
                names = sorted(ledger.unfinished)
            for name in names:
                try:
                    job = client.get(name)
                except errors.NotFound:
                    continue           # counted as lost below
                except errors.MptError:
                    pending.append(name)
                    continue
                if job.state in FINAL_STATES:
                    ledger.note_final(name, job.state)
                else:
                    pending.append(name)
            if not pending:
                break
            if time.monotonic() > deadline:
                if cancelled:
                    break
                log("drain: %d jobs still unfinished after %ds, cancelling them"
                    % (len(pending), args.drain_seconds))
                for name in pending:
                    try:
                        client.cancel(name)
                        cancelled.append(name)
                    except errors.MptError:
                        pass
                deadline = time.monotonic() + 60
            else:
                log("drain: %d jobs unfinished" % len(pending))
            time.sleep(3)
    finally:
        client.close()
    return cancelled


def audit(cluster, ledger):
    """Compares the coordinator's jobs with what the clients were told."""
    client = Client(cluster.address, timeout=30)
    try:
        jobs = list(client.list(page_size=1000))
        by_name = {j.name: j for j in jobs}
        by_rid = collections.defaultdict(list)
        for j in jobs:
            by_rid[j.display_name].append(j.name)
        lost = []
        for rid, name in sorted(ledger.acked.items()):
            if name in by_name:
                continue
            try:
                client.get(name)
            except errors.NotFound:
                lost.append((rid, name))
        dups = {rid: names for rid, names in by_rid.items() if len(names) > 1}
        unacked = {rid: names for rid, names in by_rid.items()
                   if rid in ledger.submitted and rid not in ledger.acked}
        states = collections.Counter()
        for rid, name in ledger.acked.items():
            j = by_name.get(name)
            states[state_name(j.state) if j else "(unknown)"] += 1
        mismatched = [(n, state_name(s), state_name(by_name[n].state))
                      for n, s in ledger.final_seen.items()
                      if n in by_name and by_name[n].state != s]
        return {"jobs": len(jobs), "lost": lost, "dups": dups, "unacked": unacked,
                "states": states, "mismatched": mismatched}
    finally:
        client.close()


def join_all(threads, seconds):
    deadline = time.monotonic() + seconds
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    if alive:
        log("%d threads still busy after %ds" % (alive, seconds))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10, help="load duration (default 10)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--watchers", type=int, default=200)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--seed", type=int, default=1, help="seeds the faults and the clients")
    p.add_argument("--run_dir", default="", help="default out/soak/<date-time>")
    p.add_argument("--bin", default=os.environ.get("MPT_BIN", os.path.join(REPO, "bazel-bin")),
                   help="folder with server/coordinator and worker/worker (default bazel-bin)")
    p.add_argument("--steps", type=int, default=4, help="training steps of each stage")
    p.add_argument("--pipeline_share", type=float, default=0.3,
                   help="share of submissions that are pipelines (the rest: one source stage)")
    p.add_argument("--max_unfinished", type=int, default=12,
                   help="no new submission while this many acknowledged jobs are unfinished")
    p.add_argument("--think_seconds", type=float, default=0.5,
                   help="mean pause of a client between calls")
    p.add_argument("--resubmit_share", type=float, default=0.2,
                   help="share of answered submissions sent once more with the same request_id")
    p.add_argument("--submit_retry_seconds", type=float, default=90)
    p.add_argument("--watch_reconnect_seconds", type=float, default=90)
    p.add_argument("--fault_min", type=float, default=30)
    p.add_argument("--fault_max", type=float, default=90)
    p.add_argument("--coordinator_share", type=float, default=0.35,
                   help="share of the faults that kill the coordinator (0: workers only)")
    p.add_argument("--lease_seconds", type=float, default=4)
    p.add_argument("--heartbeat_seconds", type=float, default=0.5)
    p.add_argument("--rss_every", type=float, default=3)
    p.add_argument("--drain_seconds", type=float, default=300,
                   help="how long to wait for unfinished jobs at the end before cancelling them")
    args = p.parse_args()
    if not args.run_dir:
        args.run_dir = os.path.join(REPO, "out/soak", time.strftime("%Y%m%d-%H%M%S"))
    args.run_dir = os.path.abspath(args.run_dir)
    for b in ("server/coordinator", "worker/worker"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            sys.exit("%s/%s missing: bazel build //server:coordinator //worker:worker"
                     % (args.bin, b))

    cluster = Cluster(args)
    # SIGTERM / SIGINT end the run through the finally below.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)

    ledger = Ledger()
    ledger.t0 = time.monotonic()
    samples = []
    faults = []
    stop_clients = threading.Event()
    stop_watchers = threading.Event()
    stop_rss = threading.Event()
    started = time.monotonic()
    threads = []
    watchers = []
    cancelled = []
    report = None
    try:
        cluster.start_coordinator()
        for i in range(args.workers):
            cluster.start_worker(i)
        log("coordinator %s (pid %d), %d workers, run folder %s"
            % (cluster.address, cluster.coordinator_pid(), args.workers, args.run_dir))
        rss_t = threading.Thread(target=rss_loop, args=(args, cluster, samples, started, stop_rss),
                                 daemon=True)
        rss_t.start()
        fault_t = threading.Thread(target=fault_loop, daemon=True,
                                   args=(args, cluster, faults, started, stop_clients,
                                         stop_clients))
        fault_t.start()
        for i in range(args.clients):
            t = threading.Thread(target=client_loop, daemon=True,
                                 args=(i, args, cluster, ledger, stop_clients,
                                       args.seed * 100003 + i))
            t.start()
            threads.append(t)
        for i in range(args.watchers):
            current = [None]
            t = threading.Thread(target=watcher_loop, daemon=True,
                                 args=(i, args, cluster, ledger, stop_watchers,
                                       args.seed * 200003 + i, current))
            t.start()
            watchers.append((t, current))
        end = started + args.minutes * 60
        while time.monotonic() < end and not stop_clients.is_set():
            time.sleep(min(30, max(0.1, end - time.monotonic())))
            with ledger.lock:
                log("%4.0fs: submitted %d, acknowledged %d, unfinished %d, finals seen %d, "
                    "rpcs %d, watch streams %d"
                    % (time.monotonic() - started, len(ledger.submitted), len(ledger.acked),
                       len(ledger.unfinished), len(ledger.final_seen), sum(ledger.rpc.values()),
                       ledger.watch["streams"]))
        # Stop submitting and killing; the watchers go on while draining.
        load_seconds = time.monotonic() - started
        stop_clients.set()
        fault_t.join(timeout=60)
        join_all([t for t in threads], 30 + args.submit_retry_seconds)
        cancelled = drain(args, cluster, ledger)
        stop_watchers.set()
        for _, current in watchers:
            call = current[0]
            if call is not None:
                call.cancel()
        join_all([t for t, _ in watchers], 30)
        report = audit(cluster, ledger)
        total_seconds = time.monotonic() - started
    except KeyboardInterrupt as e:
        log("interrupted: %s" % e)
        stop_clients.set()
        load_seconds = total_seconds = time.monotonic() - started
    finally:
        stop_rss.set()
        stop_clients.set()
        stop_watchers.set()
        cluster.stop_all()

    # ------------------------------------------------------------ the report
    out = []
    out.append("soak: %.1f min of load (%d clients, %d watchers, %d workers, seed %d), "
               "%.1f min in all; run folder %s"
               % (load_seconds / 60, args.clients, args.watchers, args.workers, args.seed,
                  total_seconds / 60, args.run_dir))
    out.append("faults: %d (%d coordinator, %d worker kills)"
               % (len(faults), sum(1 for f in faults if f[1] == "coordinator"),
                  sum(1 for f in faults if f[1] != "coordinator")))
    for t, what, how in faults:
        out.append("  %6.0fs  %-12s %s" % (t, what, how))
    rpcs = ", ".join("%s %d" % kv for kv in sorted(ledger.rpc.items()))
    out.append("RPCs: %s (%.1f/s); errors: %s"
               % (rpcs, sum(ledger.rpc.values()) / max(1.0, load_seconds),
                  ", ".join("%s %d" % kv for kv in sorted(ledger.rpc_errors.items())) or "none"))
    kinds = collections.Counter(ledger.submitted.values())
    out.append("jobs: submitted %d (%s), acknowledged %d, given up %d, submit retries %d"
               % (len(ledger.submitted), ", ".join("%s %d" % kv for kv in sorted(kinds.items())),
                  len(ledger.acked), len(ledger.gave_up), ledger.submit_retries))
    bad = 0
    if report:
        out.append("  acknowledged jobs by final state: %s; cancelled by the drain: %d"
                   % (", ".join("%s %d" % kv for kv in sorted(report["states"].items())),
                      len(cancelled)))
        out.append("  jobs the coordinator holds: %d" % report["jobs"])
        out.append("lost (acknowledged, unknown to the coordinator): %d" % len(report["lost"]))
        for rid, name in report["lost"][:20]:
            out.append("  %s -> %s" % (rid, name))
        dups = report["dups"]
        out.append("duplicated (two jobs for one request_id): %d in ListJobs, %d seen by clients"
                   % (len(dups), len(ledger.client_dups)))
        for rid, names in list(dups.items())[:20]:
            out.append("  %s -> %s" % (rid, ", ".join(names)))
        for rid, a, b in ledger.client_dups[:20]:
            out.append("  client: %s answered %s, then %s" % (rid, a, b))
        out.append("stored but never acknowledged (the client gave up): %d" % len(report["unacked"]))
        out.append("final state seen by a client/watcher differs from the store: %d"
                   % len(report["mismatched"]))
        for n, seen, now in report["mismatched"][:20]:
            out.append("  %s: saw %s, store says %s" % (n, seen, now))
        bad = (len(report["lost"]) + len(dups) + len(ledger.client_dups)
               + len(report["mismatched"]))
    else:
        out.append("(interrupted: no audit)")
        bad = 1
    w = ledger.watch
    out.append("watch streams: %d; %s" % (w["streams"], ", ".join(
        "%s %d" % (k, v) for k, v in sorted(w.items()) if k != "streams")))
    for name, why in ledger.watch_bad[:8]:
        out.append("  ended without a final state: %s: %s" % (name, why))
    for why, n in ledger.drop_details.most_common(8):
        out.append("  reopened after %s: %d" % (why, n))
    bad += w["ended without a final state"] + w["repeated events"]
    restarts = [t for t, what, _ in faults if what == "coordinator"]
    mem_lines, verdict = memory_report(samples, restarts,
                                       os.path.join(args.run_dir, "coordinator_rss.png"))
    out.extend(mem_lines)
    out.append("memory verdict: %s" % verdict)
    out.append("result: %s" % ("OK" if bad == 0 else "PROBLEMS FOUND (%d)" % bad))
    text = "\n".join(out)
    print(text, flush=True)
    os.makedirs(args.run_dir, exist_ok=True)
    with open(os.path.join(args.run_dir, "report.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.run_dir, "rss.tsv"), "w") as f:
        f.write("seconds\tpid\tvmrss_kb\n")
        for t, pid, kb in samples:
            f.write("%.1f\t%d\t%d\n" % (t, pid, kb))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
