#!/usr/bin/env python3
"""Drives a real coordinator through the mpt_client package (see
e2e_python_client_test.sh). Exits non-zero, naming the check, on any failure.

    python_client_check.py ADDRESS MODEL_DIR TASKS_DIR WORK_DIR
"""

import hashlib
import os
import sys
import time

import grpc

import mpt_client
from mpt_client import Client, JobState


def check(condition, what):
    if not condition:
        raise SystemExit("FAIL: " + what)


def log(message):
    print("[python client] " + message, file=sys.stderr, flush=True)


def expect_error(cls, what, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except cls as e:
        check(isinstance(e, mpt_client.MptError), what + ": not an MptError")
        log("%s raised %s: %s" % (what, cls.__name__, e))
        return e
    except Exception as e:  # noqa: BLE001
        raise SystemExit("FAIL: %s raised %s (%s), expected %s"
                         % (what, type(e).__name__, e, cls.__name__))
    raise SystemExit("FAIL: %s raised nothing, expected %s" % (what, cls.__name__))


def train(steps, checkpoint_every=5):
    return {"steps": steps, "batchSize": 4, "checkpointEvery": checkpoint_every,
            "maxEvalExamples": 4}


class _Dropped(grpc.RpcError):
    """An RPC failure as grpc raises it."""

    def __init__(self, code):
        super().__init__()
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "dropped by the test"


class _Stream:
    def __init__(self, events, failure=None):
        self._events, self._failure = events, failure

    def __iter__(self):
        yield from self._events
        if self._failure:
            raise self._failure

    def cancel(self):
        pass


class _FlakyStub:
    """Drops the first WatchJob stream after two events (UNAVAILABLE), closes
    the second, cancels the third as a coordinator shutting down does
    (CANCELLED); fails the first SubmitJob UNAVAILABLE; serves five log
    lines two at a time, failing calls 2 to 4 CANCELLED and UNAVAILABLE as
    across a SIGTERM restart (`log_failures` calls, -1: every one from
    call 2 on). Records the requests."""

    def __init__(self, log_failures=3):
        self.watch_requests, self.submit_requests, self.log_requests = [], [], []
        self.log_failures = log_failures

    def WatchJob(self, request, metadata=None):
        self.watch_requests.append(request)
        ev = lambda seq, state: mpt_client.JobEvent(sequence=seq, job=request.name, state=state)
        if len(self.watch_requests) == 1:
            return _Stream([ev(1, JobState.QUEUED), ev(2, JobState.RUNNING)],
                           _Dropped(grpc.StatusCode.UNAVAILABLE))
        if len(self.watch_requests) == 2:
            return _Stream([])  # closed early, nothing new
        if len(self.watch_requests) == 3:
            return _Stream([ev(2, JobState.RUNNING)], _Dropped(grpc.StatusCode.CANCELLED))
        return _Stream([ev(2, JobState.RUNNING), ev(3, JobState.SUCCEEDED)])

    def GetStageLogs(self, request, timeout=None, metadata=None):
        self.log_requests.append(mpt_client.client.service_pb2.GetStageLogsRequest(
            name=request.name, stage=request.stage, after_line=request.after_line))
        n = len(self.log_requests)
        if n >= 2 and (self.log_failures < 0 or n < 2 + self.log_failures):
            raise _Dropped(grpc.StatusCode.CANCELLED if n % 2 == 0 else grpc.StatusCode.UNAVAILABLE)
        page = mpt_client.client.service_pb2.GetStageLogsResponse()
        for line in range(request.after_line + 1, min(request.after_line + 3, 6)):
            page.lines.add(line=line, stage="source/a", text="line %d" % line)
        page.last_line = page.lines[-1].line if page.lines else request.after_line
        page.done = page.last_line == 5
        return page

    def SubmitJob(self, request, timeout=None, metadata=None):
        self.submit_requests.append(request)
        if len(self.submit_requests) == 1:
            raise _Dropped(grpc.StatusCode.UNAVAILABLE)
        return mpt_client.Job(name="jobs/fake")


def check_resume_and_retry(tasks):
    """Without a server: watch resumes after a dropped or closed stream from
    the last sequence seen, and submit retries with the same request_id."""
    client = Client("127.0.0.1:1", reconnect_timeout=30)
    stub = _FlakyStub()
    client._stub = stub
    sequences = [e.sequence for e in client.watch("jobs/fake")]
    check(sequences == [1, 2, 3], "watch over dropped streams gave %s" % sequences)
    after = [r.after_sequence for r in stub.watch_requests]
    check(after == [0, 2, 2, 2], "watch reopened after %s, want [0, 2, 2, 2]" % after)
    # logs(follow=True) across a coordinator's graceful restart (CANCELLED,
    # then UNAVAILABLE): every line once, asked again from the last one.
    texts = [line.text for line in client.logs("jobs/fake", follow=True, poll_seconds=0.01)]
    check(texts == ["line %d" % i for i in range(1, 6)], "logs across a restart gave %s" % texts)
    after = [r.after_line for r in stub.log_requests]
    check(after == [0, 2, 2, 2, 2, 4], "logs asked after lines %s, want [0, 2, 2, 2, 2, 4]" % after)
    # One that never comes back: Unavailable naming the address.
    gone = Client("127.0.0.1:1", reconnect_timeout=0.5)
    gone._stub = _FlakyStub(log_failures=-1)
    error = expect_error(mpt_client.Unavailable, "logs(follow=True) of a coordinator that stays away",
                         lambda: list(gone.logs("jobs/fake", follow=True)))
    check("gave up following the logs of jobs/fake after line 2: the coordinator at 127.0.0.1:1"
          in str(error) and "CANCELLED" in str(error), "the error was: %s" % error)
    gone.close()
    job = client.submit({"baseModel": "m", "source": {"tasks": [{"name": "t"}]}},
                        kind="source", base_dir=tasks)
    ids = [r.request_id for r in stub.submit_requests]
    check(job.name == "jobs/fake" and len(ids) == 2 and ids[0] == ids[1] and ids[0],
          "submit retried with request_ids %s" % ids)
    client.close()
    log("watch and logs(follow=True) resumed after dropped streams; submit retried with the "
        "same request_id")


def tree(root):
    """{relative path: contents (None for a folder)} of everything under root."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            found[os.path.relpath(os.path.join(folder, d), root)] = None
        for f in files:
            with open(os.path.join(folder, f), "rb") as fh:
                found[os.path.relpath(os.path.join(folder, f), root)] = fh.read()
    return found


def check_download_never_deletes(client, work, job, artifact, sha256):
    """A download replaces only a new or empty folder or an earlier
    download's adapter: a folder with other files, a file, the current
    folder and a job whose stage folder holds other files are refused with
    FailedPrecondition naming the path, and left exactly as they were."""
    root = os.path.join(work, "keep")
    os.makedirs(os.path.join(root, "adapters", "old_run"))
    with open(os.path.join(root, "adapters", "old_run", "adapter_model.safetensors"), "w") as f:
        f.write("important")
    with open(os.path.join(root, "adapters", "README.txt"), "w") as f:
        f.write("notes")
    with open(os.path.join(root, "myfile.txt"), "w") as f:
        f.write("user data")
    os.makedirs(os.path.join(root, "job", "source", "first"))
    with open(os.path.join(root, "job", "source", "first", "train.jsonl"), "w") as f:
        f.write("{}")
    before = tree(root)
    adapters = os.path.join(root, "adapters")
    error = expect_error(mpt_client.FailedPrecondition, "download into a folder with other files",
                         client.download, artifact, adapters)
    check("folder: %s is not empty and is not an adapter folder (it holds README.txt, old_run/)"
          % adapters in str(error), "the error was: %s" % error)
    error = expect_error(mpt_client.FailedPrecondition, "download into a file", client.download,
                         artifact, os.path.join(root, "myfile.txt"))
    check("myfile.txt is a file, not a folder" in str(error), "the error was: %s" % error)
    error = expect_error(mpt_client.FailedPrecondition, "download of a job over a stage folder "
                         "with other files", client.download, job, os.path.join(root, "job"))
    check("source/first is not empty" in str(error), "the error was: %s" % error)
    cwd = os.getcwd()
    os.chdir(os.path.join(root, "adapters"))
    try:
        error = expect_error(mpt_client.FailedPrecondition, "download into the current folder",
                             client.download, artifact, ".")
        check("is or contains the current working folder" in str(error),
              "the error was: %s" % error)
        expect_error(mpt_client.FailedPrecondition, "download into a folder above the current one",
                     client.download, artifact, root)
    finally:
        os.chdir(cwd)
    check(tree(root) == before, "a refused download changed %s" % root)
    # An earlier download of the adapter is replaced whole.
    again = os.path.join(root, "again")
    client.download(artifact, again)
    with open(os.path.join(again, "adapter_config.json"), "w") as f:
        f.write("edited")
    client.download_artifact(artifact, again, expected_sha256=sha256)
    check(sorted(os.listdir(again)) == ["adapter_config.json", "adapter_model.safetensors"],
          "a re-download left %s" % sorted(os.listdir(again)))
    with open(os.path.join(again, "adapter_config.json")) as f:
        check(f.read() != "edited", "a re-download did not replace the earlier adapter")
    check(sorted(os.listdir(root)) == ["adapters", "again", "job", "myfile.txt"],
          "downloads left %s beside their folders" % sorted(os.listdir(root)))
    log("downloads refused a folder with other files, a file and the current folder")


def main():
    address, model, tasks, work = sys.argv[1:5]
    check_resume_and_retry(tasks)
    client = Client(address, timeout=30, reconnect_timeout=60)
    check(len(client.workers()) >= 1, "ListWorkers shows no worker")

    # A token that could not travel in a header is refused before any call.
    for bad in ("caf\u00e9", "a b", "a\nb", "x" * 5000):
        expect_error(mpt_client.InvalidArgument, "a client with token %r" % bad[:8], Client, address, token=bad)

    # Errors map to the hierarchy.
    expect_error(mpt_client.NotFound, "get of an unknown job", client.get, "jobs/no-such-job")
    expect_error(mpt_client.NotFound, "cancel of an unknown job", client.cancel, "no-such-job")
    expect_error(mpt_client.NotFound, "watch of an unknown job",
                 lambda: list(client.watch("jobs/no-such-job")))
    expect_error(mpt_client.InvalidArgument, "submit of an empty spec", client.submit, {},
                 kind="source")
    expect_error(mpt_client.InvalidArgument, "submit of an unknown kind", client.submit, {},
                 kind="bogus")

    # A spec file whose paths are relative to its own folder.
    spec_dir = os.path.join(work, "specs")
    os.makedirs(spec_dir, exist_ok=True)
    os.symlink(model, os.path.join(spec_dir, "model"))
    os.symlink(tasks, os.path.join(spec_dir, "data"))
    spec_file = os.path.join(spec_dir, "pipeline.textproto")
    with open(spec_file, "w") as f:
        f.write("""
base_model: "model"
prompt { num_virtual_tokens: 4 }
source {
  tasks { name: "first" train_path: "data/first.train.jsonl" eval_path: "data/first.eval.jsonl" }
  tasks { name: "last" train_path: "data/last.train.jsonl" eval_path: "data/last.eval.jsonl" }
  train { steps: 10 batch_size: 4 checkpoint_every: 5 max_eval_examples: 4 }
}
distillation {
  train { steps: 10 batch_size: 4 checkpoint_every: 5 max_eval_examples: 4 }
  world_size: 1
}
target {
  tasks { name: "echo" train_path: "data/echo.train.jsonl" eval_path: "data/echo.eval.jsonl" }
  train { steps: 10 batch_size: 4 checkpoint_every: 5 max_eval_examples: 4 }
}
""")
    request = client.build_submit_request(spec_file)
    check(request.spec.base_model == os.path.join(spec_dir, "model"),
          "base_model not resolved against the spec's folder: " + request.spec.base_model)
    check(len(request.request_id) == 32, "no generated request_id")
    pipeline = client.submit(spec_file, display_name="py-pipeline", request_id="py-file-1")
    log("submitted %s from a file" % pipeline.name)
    check(pipeline.name.startswith("jobs/"), "odd job name " + pipeline.name)
    check(pipeline.kind == mpt_client.JobKind.PIPELINE, "the file job is not a pipeline")
    # The same request_id returns the same job.
    again = client.submit(spec_file, display_name="py-pipeline", request_id="py-file-1")
    check(again.name == pipeline.name, "a resubmission with the same request_id made a new job")

    # From a dict (the spec's JSON form), relative paths against base_dir.
    source_spec = {
        "baseModel": model,
        "prompt": {"numVirtualTokens": 4},
        "source": {
            "tasks": [{"name": "count", "trainPath": "count.train.jsonl",
                       "evalPath": "count.eval.jsonl"}],
            "train": train(10),
        },
    }
    from_dict = client.submit(source_spec, kind="source", base_dir=tasks)
    log("submitted %s from a dict" % from_dict.name)
    check(from_dict.kind == mpt_client.JobKind.SOURCE_TRAINING, "the dict job is not a source job")
    check(from_dict.spec.source.tasks[0].train_path == os.path.join(tasks, "count.train.jsonl"),
          "train_path not resolved against base_dir")

    # Watch the pipeline: a few events, stop, then resume after the last seen.
    seen = []
    for event in client.watch(pipeline.name):
        seen.append(event)
        if len(seen) == 2:
            break
    for event in client.watch(pipeline.name, after=seen[-1].sequence):
        seen.append(event)
    sequences = [e.sequence for e in seen]
    check(sequences == sorted(set(sequences)), "events repeated or out of order: %s" % sequences)
    check(sequences[0] == 1 and sequences == list(range(1, len(sequences) + 1)),
          "events missing: %s" % sequences)
    check(seen[-1].state == JobState.SUCCEEDED,
          "the pipeline ended %s" % mpt_client.state_name(seen[-1].state))
    log("watched %s to SUCCEEDED in %d events" % (pipeline.name, len(seen)))
    # A watch of a finished job replays from `after` and ends.
    tail = list(client.watch(pipeline.name, after=sequences[-2]))
    check([e.sequence for e in tail] == [sequences[-1]], "replay after %d" % sequences[-2])

    done = client.wait(from_dict.name)
    check(done.state == JobState.SUCCEEDED, "the dict job ended %s" % mpt_client.state_name(done.state))

    # Get.
    job = client.get(pipeline.name.split("/", 1)[1])
    check(job.name == pipeline.name and job.state == JobState.SUCCEEDED, "get of the pipeline")
    check(job.display_name == "py-pipeline", "display_name lost")
    ids = [s.id for s in job.stages]
    check(ids == ["source/first", "source/last", "distillation", "target/echo"] or
          sorted(ids) == sorted(["source/first", "source/last", "distillation", "target/echo"]),
          "stages %s" % ids)
    check(all(s.state == JobState.SUCCEEDED and s.artifact for s in job.stages),
          "a stage without success or adapter")

    # Stage logs: every stage has lines, each once and in order; one stage
    # alone; follow on a finished job ends; a bad stage names the field.
    lines = list(client.logs(pipeline.name))
    check(sorted({line.stage for line in lines}) == sorted(ids),
          "log lines of stages %s" % sorted({line.stage for line in lines}))
    numbers = [line.line for line in lines]
    check(numbers == sorted(set(numbers)), "log line numbers repeat or go back")
    first = list(client.logs(pipeline.name, stage="source/first", follow=True, poll_seconds=0.2))
    check(first and all(line.stage == "source/first" for line in first), "logs of source/first")
    check(any("FINISHED" in line.text for line in first), "no FINISHED line in source/first")
    error = expect_error(mpt_client.InvalidArgument, "logs of a malformed stage",
                         lambda: list(client.logs(pipeline.name, stage="nope")))
    check("stage" in str(error), "the error does not name the stage field")
    expect_error(mpt_client.NotFound, "logs of a stage the job lacks",
                 lambda: list(client.logs(pipeline.name, stage="source/none")))
    log("%d log lines over %d stages" % (len(lines), len(ids)))

    # Cancel a second, long job while it runs; cancelling again is refused.
    long_spec = dict(source_spec)
    long_spec["source"] = dict(source_spec["source"], train=train(20000, 10))
    long_job = client.submit(long_spec, kind="source", base_dir=tasks)
    for event in client.watch(long_job.name):
        if event.state == JobState.RUNNING and event.progress.step > 0:
            break
    cancelled = client.cancel(long_job.name)
    check(cancelled.state in (JobState.CANCELLING, JobState.CANCELLED),
          "cancel answered %s" % mpt_client.state_name(cancelled.state))
    final = client.wait(long_job.name)
    check(final.state == JobState.CANCELLED, "the long job ended %s"
          % mpt_client.state_name(final.state))
    expect_error(mpt_client.FailedPrecondition, "second cancel", client.cancel, long_job.name)
    log("cancelled %s" % long_job.name)

    # List: every page, and filters.
    all_jobs = [j.name for j in client.list(page_size=1)]
    check(sorted(all_jobs) == sorted({pipeline.name, from_dict.name, long_job.name}),
          "list with page_size=1 gave %s" % all_jobs)
    succeeded = [j.name for j in client.list(states=["SUCCEEDED"])]
    check(sorted(succeeded) == sorted([pipeline.name, from_dict.name]),
          "list of SUCCEEDED gave %s" % succeeded)
    sources = [j.name for j in client.list(kinds=["source"], states=[JobState.CANCELLED])]
    check(sources == [long_job.name], "list of cancelled source jobs gave %s" % sources)
    # The basic view: the same jobs without spec and artefacts, stages kept.
    full = {j.name: j for j in client.list()}
    for j in client.list(basic=True):
        check(not j.HasField("spec") and len(j.artifacts) == 0,
              "the basic view of %s carries a spec or artefacts" % j.name)
        check(j.state == full[j.name].state and len(j.stages) == len(full[j.name].stages),
              "the basic view of %s differs from the full one" % j.name)
    check(any(len(j.artifacts) > 0 for j in full.values()), "no listed job has artefacts")

    # Download every adapter of the pipeline, and one by name.
    out = os.path.join(work, "adapters")
    paths = client.download(pipeline.name, out)
    check(sorted(paths) == sorted(ids), "downloaded stages %s" % sorted(paths))
    for stage_id, path in paths.items():
        check(path == os.path.join(os.path.abspath(out), *stage_id.split("/")),
              "%s went to %s" % (stage_id, path))
        check(os.path.isfile(os.path.join(path, "adapter_model.safetensors")),
              "%s has no adapter_model.safetensors" % path)
    target = next(s for s in job.stages if s.id == "target/echo")
    meta = next(a for a in job.artifacts if a.name == target.artifact)
    single = os.path.join(work, "single")
    client.download(target.artifact, single)
    with open(os.path.join(single, "adapter_model.safetensors"), "rb") as a, \
            open(os.path.join(paths["target/echo"], "adapter_model.safetensors"), "rb") as b:
        check(a.read() == b.read(), "the two downloads of target/echo differ")
    check(len(meta.sha256) == 64, "artifact without sha256")
    # A hash that does not match is DataLoss, and nothing is unpacked.
    wrong = os.path.join(work, "wrong")
    expect_error(mpt_client.DataLoss, "download with a wrong sha256", client.download_artifact,
                 target.artifact, wrong, expected_sha256=hashlib.sha256(b"x").hexdigest())
    check(not os.path.exists(wrong), "a download that failed its hash check left files")
    check_download_never_deletes(client, work, pipeline.name, target.artifact, meta.sha256)
    expect_error(mpt_client.NotFound, "download of an unknown artefact", client.download,
                 pipeline.name + "/artifacts/no-such-artifact", os.path.join(work, "none"))
    expect_error(mpt_client.FailedPrecondition, "download of a job without adapters",
                 client.download, long_job.name, os.path.join(work, "none"))

    # Adapter folders for adapter_check, one a line.
    with open(os.path.join(work, "downloaded.txt"), "w") as f:
        for stage_id in ids:
            f.write(paths[stage_id] + "\n")
    client.close()
    log("all checks passed")


if __name__ == "__main__":
    main()
