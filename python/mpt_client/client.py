"""A typed client of the MPT JobService (see proto/mpt/v1/service.proto)."""

import ctypes
import hashlib
import io
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
import time

import grpc
from google.protobuf import json_format, text_format

from mpt_client import errors
from mpt_client._gen import service_pb2, service_pb2_grpc, spec_pb2

PipelineSpec = spec_pb2.PipelineSpec
Job = service_pb2.Job
JobEvent = service_pb2.JobEvent
JobKind = service_pb2.JobKind
JobState = service_pb2.JobState
LogLine = service_pb2.LogLine

FINAL_STATES = frozenset((JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED))

_KINDS = {
    "pipeline": JobKind.PIPELINE,
    "source": JobKind.SOURCE_TRAINING,
    "source_training": JobKind.SOURCE_TRAINING,
    "distillation": JobKind.DISTILLATION,
    "target": JobKind.TARGET_ADAPTATION,
    "target_adaptation": JobKind.TARGET_ADAPTATION,
}


# Replies up to 64 MiB, as mptctl takes them (gRPC's default is 4 MiB): a
# page of jobs with large specs or a long event history still arrives.
_CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 64 << 20),)

def state_name(state):
    """"SUCCEEDED" for JobState.SUCCEEDED."""
    return JobState.Name(state)


def job_name(id_or_name):
    """"jobs/ID" for "ID" or "jobs/ID"."""
    return id_or_name if id_or_name.startswith("jobs/") else "jobs/" + id_or_name


MAX_TOKEN_BYTES = 4096


def _check_token(token):
    """Raise InvalidArgument unless `token` can travel in the authorization
    header: 1 to 4096 bytes of printable ASCII other than the space (the
    coordinator and mptctl apply the same rule)."""
    data = token.encode("utf-8") if isinstance(token, str) else bytes(token)
    if len(data) > MAX_TOKEN_BYTES:
        raise errors.InvalidArgument("token: %d bytes; at most %d" % (len(data), MAX_TOKEN_BYTES))
    for i, b in enumerate(data):
        if b < 0x21 or b > 0x7E:
            raise errors.InvalidArgument(
                "token: byte 0x%02X at position %d; a token is printable ASCII without spaces "
                "or control characters (0x21 to 0x7E)" % (b, i))


def new_request_id():
    """A random idempotency key: 128 bits, hex, as mptctl makes them."""
    return secrets.token_hex(16)


def _parse_kind(kind):
    if isinstance(kind, int):
        return kind
    key = str(kind).lower()
    if key in _KINDS:
        return _KINDS[key]
    try:
        return JobKind.Value(str(kind).upper())
    except ValueError:
        raise errors.InvalidArgument(
            'kind: "%s" is not one of pipeline, source, distillation, target' % kind) from None


def _parse_state(state):
    if isinstance(state, int):
        return state
    try:
        return JobState.Value(str(state).upper())
    except ValueError:
        raise errors.InvalidArgument('states: "%s" is not a job state' % state) from None


def _is_artifact(value):
    return value.startswith("jobs/") and "/artifacts/" in value


def _resolve(path, base_dir):
    """As ResolvePath() in common/spec: absolute against base_dir, normalised;
    artefact names ("jobs/J/artifacts/A") and empty strings stay."""
    if not path or _is_artifact(path):
        return path
    return os.path.normpath(os.path.join(os.path.abspath(base_dir), path))


def resolve_spec_paths(spec, base_dir):
    """Makes base_model, every train_path/eval_path and adapter path in `spec`
    absolute against base_dir, in place (like mptctl submit)."""
    spec.base_model = _resolve(spec.base_model, base_dir)
    stages = []
    if spec.HasField("source"):
        stages.append(spec.source)
        spec.source.init_adapters[:] = [_resolve(a, base_dir) for a in spec.source.init_adapters]
    if spec.HasField("distillation"):
        stages.append(spec.distillation)
        d = spec.distillation
        d.teacher_adapters[:] = [_resolve(a, base_dir) for a in d.teacher_adapters]
    if spec.HasField("target"):
        stages.append(spec.target)
        t = spec.target
        t.source_adapter = _resolve(t.source_adapter, base_dir)
        t.teacher_adapters[:] = [_resolve(a, base_dir) for a in t.teacher_adapters]
    for stage in stages:
        for task in stage.tasks:
            task.train_path = _resolve(task.train_path, base_dir)
            task.eval_path = _resolve(task.eval_path, base_dir)
    return spec


def read_spec(path):
    """Parses a spec file: JSON for a name ending in .json, text format
    otherwise (as mptctl and mpt_train read them). Paths are left as written."""
    try:
        with open(path, encoding="utf-8") as f:
            content = f.read()
    except FileNotFoundError:
        raise errors.NotFound("%s: no such file" % path) from None
    except OSError as e:
        raise errors.MptError("%s: %s" % (path, e)) from None
    spec = PipelineSpec()
    try:
        if str(path).lower().endswith(".json"):
            json_format.Parse(content, spec)
        else:
            text_format.Parse(content, spec)
    except (json_format.ParseError, text_format.ParseError) as e:
        raise errors.InvalidArgument("%s: %s" % (path, e)) from None
    return spec


def _safe_members(archive, name):
    """The archive's members, refusing what UnpackFolder() refuses."""
    members = archive.getmembers()
    for m in members:
        parts = m.name.replace("\\", "/").split("/")
        if m.name.startswith("/") or ".." in parts:
            raise errors.InvalidArgument("%s: unsafe path in the archive: %s" % (name, m.name))
        if not (m.isfile() or m.isdir()):
            raise errors.InvalidArgument("%s: %s is neither a file nor a folder" % (name, m.name))
    return members


# What a download of an adapter artefact leaves in its folder: the only
# files a folder may hold for a download to replace it (as mptctl).
ADAPTER_FILES = frozenset(("adapter_config.json", "adapter_model.safetensors"))


def _refuse(label, folder, why):
    return errors.FailedPrecondition("%s: %s %s; give a new or empty folder" % (label, folder, why))


def check_download_folder(folder, label="folder"):
    """Raises FailedPrecondition unless a download may replace `folder`
    without deleting anything the user did not ask to replace: it must not
    exist, be an empty folder, or hold nothing but an earlier download's
    adapter files (ADAPTER_FILES). Refused, naming the path and why: a file
    (also one on the way), a symbolic link, a folder that is or contains
    the current working folder, a folder with other entries (named)."""
    folder = os.fspath(folder)
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        prefix = ""
        for part in os.path.normpath(folder).split(os.sep):
            prefix = os.path.join(prefix, part) if prefix else (part or os.sep)
            if os.path.exists(prefix) and not os.path.isdir(prefix):
                raise _refuse(label, folder, "lies under %s, which is a file, not a folder"
                              % prefix) from None
        raise _refuse(label, folder, "lies under a file, not a folder") from None
    except OSError as e:
        raise errors.FailedPrecondition("%s: %s: %s" % (label, folder, e.strerror)) from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(label, folder, "is a symbolic link")
    if stat.S_ISREG(st.st_mode):
        raise _refuse(label, folder, "is a file, not a folder")
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(label, folder, "is a FIFO, a socket or a device, not a folder")
    target = os.path.realpath(folder)
    here = os.path.realpath(os.getcwd())
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        raise _refuse(label, folder, "is or contains the current working folder")
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise errors.FailedPrecondition("%s: %s: %s" % (label, folder, e.strerror)) from None
    others = []
    for name in names:
        mode = os.lstat(os.path.join(folder, name)).st_mode
        if stat.S_ISREG(mode) and name in ADAPTER_FILES:
            continue
        others.append(name + "/" if stat.S_ISDIR(mode) else name)
    if others:
        others.sort()
        listed = ", ".join(others[:5])
        if len(others) > 5:
            listed += " and %d more" % (len(others) - 5)
        raise _refuse(label, folder,
                      "is not empty and is not an adapter folder (it holds %s)" % listed)


def _exchange(a, b):
    """Swaps two existing paths in one step (Linux renameat2 with
    RENAME_EXCHANGE); False where the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def unpack_tar(data, folder, name="", label="folder"):
    """Unpacks a tar archive (bytes) into `folder`, replacing it only once the
    whole archive is written, and only when check_download_folder() allows
    it (checked before anything is written and again just before the swap):
    on any error the old folder, or file, stays as it was. Where the file
    system can, the new folder takes the old one's place in one step."""
    shown = os.fspath(folder)
    check_download_folder(shown, label)
    folder = os.path.abspath(shown)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="." + os.path.basename(folder) + ".", dir=parent)
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
                archive.extractall(scratch, members=_safe_members(archive, name))
        except tarfile.TarError as e:
            raise errors.InvalidArgument("%s: corrupt archive: %s" % (name, e)) from None
        check_download_folder(shown, label)  # it may have changed meanwhile
        if os.path.lexists(folder) and _exchange(scratch, folder):
            shutil.rmtree(scratch, ignore_errors=True)  # the old contents now
            return folder
        old = None
        if os.path.lexists(folder):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(folder) + ".old.", dir=parent)
            os.rmdir(old)
            os.rename(folder, old)
        try:
            os.rename(scratch, folder)
        except BaseException:
            if old is not None:
                os.rename(old, folder)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return folder


class _Reconnect:
    """How watch() and logs(follow=True) ride out a coordinator that goes
    away (a restart, graceful or not), as mptctl does: failed() after each
    attempt that ended early, reached() after each answer."""

    def __init__(self, client, doing):
        self._client = client
        self._doing = doing
        self._since = None
        self._backoff = 0.25

    def failed(self, error, resume):
        """After an attempt that ended with `error` (an MptError; None for a
        stream that closed early). Returns, after a back-off, when the next
        attempt (from `resume`, e.g. "line 12") may succeed; raises `error`
        when a retry cannot cure it, or Unavailable naming the coordinator's
        address and what happened once it stayed away longer than the
        client's reconnect_timeout."""
        if error is not None and not errors.is_retryable(error):
            raise error
        now = time.monotonic()
        if self._since is None:
            self._since = now
        elif now - self._since > self._client.reconnect_timeout:
            raise errors.Unavailable(
                "gave up %s after %s: the coordinator at %s has been lost for %.0fs (last: %s); "
                "a larger reconnect_timeout waits longer"
                % (self._doing, resume, self._client.address, now - self._since,
                   errors.what_happened(error)))
        time.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, 5.0)

    def reached(self):
        self._since = None
        self._backoff = 0.25


class Client:
    """A connection to a coordinator.

        client = Client("127.0.0.1:50051", token=None)
        job = client.submit("demo/pipeline.textproto")
        for event in client.watch(job.name): ...

    Every method raises an errors.MptError subclass (NotFound,
    InvalidArgument, FailedPrecondition, Unavailable, ...) on failure.
    """

    def __init__(self, address, token=None, tls=False, ca=None, cert=None, key=None,
                 server_name=None, timeout=30.0, submit_attempts=5, reconnect_timeout=600.0,
                 channel=None):
        """`address` is host:port. `token` is sent as "authorization: Bearer
        TOKEN". `tls` (implied by `ca`) uses TLS, with `ca` (a PEM file) as
        the roots (default: the system's), `cert`/`key` (PEM files) as the
        client certificate and `server_name` to override the name checked.
        `timeout` bounds each unary call (seconds); `submit_attempts` how
        often submit() tries; `reconnect_timeout` how long watch() and
        logs(follow=True) keep reconnecting to a coordinator they lost. `channel` replaces the
        channel made from the rest."""
        self.address = address
        self.timeout = timeout
        self.submit_attempts = max(1, int(submit_attempts))
        self.reconnect_timeout = reconnect_timeout
        if token:
            _check_token(token)
        self._metadata = (("authorization", "Bearer " + token),) if token else None
        if channel is None:
            if tls or ca or cert:
                def read(path):
                    if not path:
                        return None
                    with open(path, "rb") as f:
                        return f.read()
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=read(ca), private_key=read(key),
                    certificate_chain=read(cert))
                options = list(_CHANNEL_OPTIONS)
                if server_name:
                    options.append(("grpc.ssl_target_name_override", server_name))
                channel = grpc.secure_channel(address, credentials, options=options)
            else:
                channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._channel = channel
        self._stub = service_pb2_grpc.JobServiceStub(channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request, timeout=None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    # ---------------------------------------------------------------- jobs

    def build_submit_request(self, spec, kind="pipeline", request_id=None, priority=0,
                             display_name="", base_dir=None):
        """The SubmitJobRequest submit() sends (see there)."""
        if isinstance(spec, PipelineSpec):
            message = PipelineSpec()
            message.CopyFrom(spec)
            folder = base_dir or os.getcwd()
        elif isinstance(spec, dict):
            message = PipelineSpec()
            try:
                json_format.ParseDict(spec, message)
            except json_format.ParseError as e:
                raise errors.InvalidArgument("spec: %s" % e) from None
            folder = base_dir or os.getcwd()
        elif isinstance(spec, (str, os.PathLike)):
            message = read_spec(os.fspath(spec))
            folder = base_dir or os.path.dirname(os.path.abspath(os.fspath(spec)))
        else:
            raise TypeError("spec: a path, a dict or a PipelineSpec, not %s" % type(spec).__name__)
        resolve_spec_paths(message, folder)
        return service_pb2.SubmitJobRequest(
            kind=_parse_kind(kind), spec=message, priority=priority,
            display_name=display_name, request_id=request_id or new_request_id())

    def submit(self, spec, kind="pipeline", request_id=None, priority=0, display_name="",
               base_dir=None):
        """Submits a job and returns it (a Job).

        `spec` is a spec file (text format, or JSON for *.json), a dict in the
        spec's JSON form, or a PipelineSpec. Relative paths in it are made
        absolute against the file's folder (for a dict or a message: against
        `base_dir`, default the current folder), as mptctl does; artefact
        names ("jobs/J/artifacts/A") stay. `kind` is "pipeline", "source",
        "distillation" or "target". A request_id is always sent (a random one
        when not given), and a call that ends as a lost coordinator does
        (errors.is_retryable: UNAVAILABLE, DEADLINE_EXCEEDED, or CANCELLED by
        one shutting down) is retried with the same id, so the job is
        created once."""
        request = self.build_submit_request(spec, kind, request_id, priority, display_name,
                                            base_dir)
        backoff = 0.25
        for attempt in range(1, self.submit_attempts + 1):
            try:
                return self._call(self._stub.SubmitJob, request)
            except errors.MptError as e:
                if not errors.is_retryable(e) or attempt >= self.submit_attempts:
                    raise
            time.sleep(backoff)
            backoff = min(backoff * 2, 4.0)
        raise AssertionError("unreachable")

    def get(self, name):
        """The job "jobs/ID" (or "ID")."""
        return self._call(self._stub.GetJob, service_pb2.GetJobRequest(name=job_name(name)))

    def list(self, states=(), kinds=(), page_size=0, basic=False):
        """Every job (newest first), fetching page after page; `states` and
        `kinds` filter (names like "RUNNING", "source" or enum values).
        basic=True asks for each job without its spec and artefact list."""
        request = service_pb2.ListJobsRequest(
            page_size=page_size, states=[_parse_state(s) for s in states],
            kinds=[_parse_kind(k) for k in kinds],
            view=service_pb2.JOB_VIEW_BASIC if basic else service_pb2.JOB_VIEW_FULL)
        while True:
            page = self._call(self._stub.ListJobs, request)
            yield from page.jobs
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def cancel(self, name):
        """Cancels a job and returns it (CANCELLING or CANCELLED).
        FailedPrecondition when it has already ended."""
        return self._call(self._stub.CancelJob, service_pb2.CancelJobRequest(name=job_name(name)))

    def workers(self):
        """The workers the coordinator knows."""
        return list(self._call(self._stub.ListWorkers, service_pb2.ListWorkersRequest()).workers)

    def watch(self, name, after=0):
        """The job's events (JobEvent) after sequence `after`, ending with the
        one that puts the job in a final state. A stream that closes early or
        fails as a lost coordinator does (errors.is_retryable: unreachable,
        or CANCELLED by one shutting down) is reopened after the last
        sequence seen, for up to `reconnect_timeout` seconds; events are
        never repeated. Giving up raises Unavailable naming the address."""
        name = job_name(name)
        last = after
        reconnect = _Reconnect(self, "watching " + name)
        while True:
            request = service_pb2.WatchJobRequest(name=name, after_sequence=last)
            stream = self._stub.WatchJob(request, metadata=self._metadata)
            failure = None
            try:
                for event in stream:
                    reconnect.reached()
                    if event.sequence <= last:
                        continue
                    last = event.sequence
                    yield event
                    if event.state in FINAL_STATES:
                        return
            except grpc.RpcError as e:
                failure = errors.from_rpc_error(e)
            finally:
                stream.cancel()
            reconnect.failed(failure, "event %d" % last)

    def wait(self, name, after=0):
        """Watches the job to its end and returns it (a Job)."""
        for _ in self.watch(name, after):
            pass
        return self.get(name)

    def logs(self, name, stage="", follow=False, after_line=0, poll_seconds=1.0):
        """The log lines (LogLine) of job `name`'s stages: of `stage` only
        ("source/sst2", "distillation", ...) or of every stage in the order
        they were stored, after line number `after_line`. Each line has
        `stage`, `time`, `severity` and `text` (the worker's log line, a
        progress line, or the error that failed the stage). With `follow`
        the iterator keeps asking for new lines every `poll_seconds` until
        the stage (or, without one, the job) is final and every line was
        yielded, riding out a lost coordinator for up to
        `reconnect_timeout` seconds; without it, it ends with the lines
        stored now. Lines are never repeated. A coordinator that goes away
        while following (unreachable, or restarted after a graceful
        shutdown, which ends calls CANCELLED) is ridden out as watch() does,
        resuming after the last line yielded; giving up raises Unavailable
        naming the address. InvalidArgument for a malformed stage id,
        NotFound for a stage the job does not have."""
        request = service_pb2.GetStageLogsRequest(
            name=job_name(name), stage=stage, after_line=after_line)
        reconnect = _Reconnect(self, "following the logs of %s%s"
                               % (request.name, " stage " + stage if stage else ""))
        while True:
            try:
                page = self._call(self._stub.GetStageLogs, request)
            except errors.MptError as e:
                if not follow:
                    raise
                # As watch() does: the same request again, from the last line.
                reconnect.failed(e, "line %d" % request.after_line)
                continue
            reconnect.reached()
            yield from page.lines
            request.after_line = page.last_line
            if page.more:
                continue
            if not follow or page.done:
                return
            time.sleep(poll_seconds)

    # ----------------------------------------------------------- artefacts

    def download_artifact(self, artifact, folder, expected_sha256=""):
        """Downloads one artefact, checks its SHA-256 (the one streamed and,
        when given, `expected_sha256`) and unpacks it into `folder`, which
        must not exist, be empty or hold nothing but an earlier download's
        adapter files (check_download_folder; FailedPrecondition, before
        anything is fetched, otherwise)."""
        check_download_folder(folder)
        request = service_pb2.DownloadArtifactRequest(name=artifact)
        data = bytearray()
        sent_sha = ""
        total = -1
        try:
            for chunk in self._stub.DownloadArtifact(request, metadata=self._metadata,
                                                     timeout=self.timeout + 600):
                if chunk.offset != len(data):
                    raise errors.DataLoss("%s: chunk at offset %d where %d was expected"
                                          % (artifact, chunk.offset, len(data)))
                data += chunk.data
                if chunk.sha256:
                    sent_sha = chunk.sha256
                if chunk.total_bytes > 0:
                    total = chunk.total_bytes
        except grpc.RpcError as e:
            error = errors.from_rpc_error(e)
            raise type(error)("%s: %s" % (artifact, error.details), code=error.code) from None
        if total >= 0 and total != len(data):
            raise errors.DataLoss("%s: got %d of %d bytes" % (artifact, len(data), total))
        actual = hashlib.sha256(data).hexdigest()
        if not sent_sha or actual != sent_sha:
            raise errors.DataLoss("%s: SHA-256 %s does not match %s"
                                  % (artifact, actual, sent_sha or "(none sent)"))
        if expected_sha256 and actual != expected_sha256:
            raise errors.DataLoss("%s: SHA-256 %s does not match the expected %s"
                                  % (artifact, actual, expected_sha256))
        return unpack_tar(bytes(data), folder, artifact)

    def download(self, name_or_artifact, folder):
        """Downloads adapters like `mptctl download`.

        For an artefact ("jobs/J/artifacts/A") unpacks it into `folder` and
        returns {artifact: folder}. For a job, unpacks the adapter of every
        finished stage into folder/<stage id> (e.g. folder/source/first) and
        returns {stage id: path}; FailedPrecondition when no stage has one
        yet. A folder it writes is replaced only when it does not exist, is
        empty or holds nothing but an earlier download's adapter files:
        anything else (other files, a file, the current folder) is
        FailedPrecondition naming the path, before anything is fetched or
        written, and is left as it was."""
        if "/artifacts/" in name_or_artifact:
            return {name_or_artifact: self.download_artifact(name_or_artifact, folder)}
        job = self.get(name_or_artifact)
        sha_by_name = {a.name: a.sha256 for a in job.artifacts}
        items = []
        for stage in job.stages:
            if not stage.artifact:
                continue
            parts = [p for p in stage.id.split("/") if p]
            if not parts or any(p in (".", "..") for p in parts):
                raise errors.Internal('unusable stage id "%s"' % stage.id)
            items.append((stage, os.path.join(folder, *parts)))
        if not items:
            raise errors.FailedPrecondition("%s (%s) has no finished stage with an adapter yet"
                                            % (job.name, state_name(job.state)))
        for _, path in items:  # every folder first: all or nothing refused
            check_download_folder(path)
        result = {}
        for stage, path in items:
            result[stage.id] = self.download_artifact(stage.artifact, path,
                                                      sha_by_name.get(stage.artifact, ""))
        return result
