#!/usr/bin/env python3
"""Random requests to every RPC of a running coordinator, through a generic
gRPC client (grpcio and the protobuf descriptors of proto/mpt/v1), with
checks on every answer.

    api_fuzz.py ADDRESS JOB --gen DIR [--requests N] [--seed S] [--report FILE]

JOB is a job submitted before the run ("jobs/..."); it and a worker this
script registers give the requests real names to start from. Each request
is either a random message of the RPC's type (every field kind: strings
of every shape, huge and negative numbers, NaN, unknown enum values,
nested and repeated fields) or a valid request with one to three fields
replaced by such values. When the coordinator hands this script's worker
an assignment, the worker RPCs go to that assignment too, so uploads,
progress reports and completions reach the code that checks them.

Every answer must be OK or one of the codes a client is told to expect
for bad input (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...), with
a message of at most 4 KiB on one line. UNKNOWN, INTERNAL, UNAVAILABLE and
DEADLINE_EXCEEDED (outside the calls that wait: WatchJob, PollAssignment,
StoreGet) are findings. At the end the coordinator must still answer and
JOB must hold the spec it was submitted with. Exits 1 on any finding,
printing each with the request that caused it (text format); 0 otherwise.
"""

import argparse
import collections
import hashlib
import http.client
import io
import json
import math
import os
import random
import sys
import tarfile
import time

import grpc
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import text_format

ALLOWED = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED, grpc.StatusCode.DATA_LOSS,
}
WAITING_CALLS = {"WatchJob", "PollAssignment", "StoreGet"}
MAX_DETAILS = 4096 + 40  # ErrorMessageForClient: 4 KiB and "... (N bytes)"
WORKER_KEY_METADATA = "x-mpt-worker-key"


class Values:
    """Random values of each protobuf field kind, with names seen in the run."""

    def __init__(self, rng):
        self.rng = rng
        self.names = []  # job, artefact, worker and assignment names seen

    def string(self):
        r = self.rng
        choices = [
            lambda: "",
            lambda: r.choice(self.names) if self.names else "jobs/x",
            lambda: r.choice(self.names) + r.choice(["/", "x", "/..", "\n", "\0"])
            if self.names else "jobs/",
            lambda: "".join(r.choice("abcXYZ019-_./ ") for _ in range(r.randint(1, 24))),
            lambda: "a" * r.choice([255, 256, 1024, 1025, 5000, 70000]),
            lambda: r.choice(["jobs/", "jobs//", "jobs/../x", "workers/", "workers/x",
                              "jobs/a/artifacts/", "jobs/a/artifacts/b", "../../etc/passwd",
                              "/", "\0", " ", "\n\r\t", "%s%n", "é漢字\U0001F600", "\ud800".encode(
                                  "utf-8", "surrogatepass").decode("utf-8", "replace"),
                              "SOURCE_TRAINING", "adapter", "checkpoint", "x" * 17]),
            lambda: "".join(chr(r.randint(1, 0x2FFF)) for _ in range(r.randint(1, 40))),
        ]
        return r.choice(choices)()

    def bytes_(self):
        r = self.rng
        n = r.choice([0, 1, 7, 64, 512, 4096, r.randint(0, 70000)])
        return bytes(r.getrandbits(8) for _ in range(min(n, 4096))) + b"\0" * max(0, n - 4096)

    def integer(self, bits, signed):
        r = self.rng
        top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        low = -(1 << (bits - 1)) if signed else 0
        return r.choice([0, 1, 2, 3, 4, 16, 1000, top, low, r.randint(low, top),
                         max(low, -1), max(low, -100)])

    def real(self):
        r = self.rng
        return r.choice([0.0, -0.0, 1.0, -1.0, 0.5, 1e308, -1e308, 1e-310, math.nan,
                         math.inf, -math.inf, r.uniform(-1e6, 1e6), 3600.0, 1e9])


def _scalar(field, values):
    t = field.type
    fd = pb_descriptor.FieldDescriptor
    if t == fd.TYPE_STRING:
        return values.string()
    if t == fd.TYPE_BYTES:
        return values.bytes_()
    if t == fd.TYPE_BOOL:
        return values.rng.random() < 0.5
    if t in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
        v = values.real()
        if t == fd.TYPE_FLOAT and math.isfinite(v) and abs(v) > 3e38:
            v = math.copysign(3e38, v)
        return v
    if t == fd.TYPE_ENUM:
        return values.rng.randint(-2, 24)
    if t in (fd.TYPE_INT32, fd.TYPE_SINT32, fd.TYPE_SFIXED32):
        return values.integer(32, True)
    if t in (fd.TYPE_UINT32, fd.TYPE_FIXED32):
        return values.integer(32, False)
    if t in (fd.TYPE_INT64, fd.TYPE_SINT64, fd.TYPE_SFIXED64):
        return values.integer(64, True)
    if t in (fd.TYPE_UINT64, fd.TYPE_FIXED64):
        return values.integer(64, False)
    raise ValueError("field kind %d" % t)


def set_random(message, field, values, depth):
    """Gives `field` of `message` a random value (or values)."""
    fd = pb_descriptor.FieldDescriptor
    rng = values.rng
    if field.type == fd.TYPE_MESSAGE:
        entry = field.message_type
        if entry.GetOptions().map_entry:
            target = getattr(message, field.name)
            target.clear()
            for _ in range(rng.randint(0, 3)):
                key = _scalar(entry.fields_by_name["key"], values)
                vfield = entry.fields_by_name["value"]
                if vfield.type == fd.TYPE_MESSAGE:
                    fill_random(target[key], values, depth + 1)
                else:
                    target[key] = _scalar(vfield, values)
            return
        if field.label == fd.LABEL_REPEATED:
            target = getattr(message, field.name)
            del target[:]
            for _ in range(rng.randint(0, 3)):
                fill_random(target.add(), values, depth + 1)
            return
        sub = getattr(message, field.name)
        sub.Clear()
        fill_random(sub, values, depth + 1)
        sub.SetInParent()
        return
    if field.label == fd.LABEL_REPEATED:
        target = getattr(message, field.name)
        del target[:]
        for _ in range(rng.choice([0, 1, 2, 3, 40])):
            target.append(_scalar(field, values))
        return
    setattr(message, field.name, _scalar(field, values))


def fill_random(message, values, depth=0):
    """Sets a random subset of `message`'s fields, recursing a few levels."""
    if depth > 3:
        return
    for field in message.DESCRIPTOR.fields:
        if values.rng.random() < 0.5:
            set_random(message, field, values, depth)


def mutate(message, values):
    """Replaces one to three fields (at any depth) of `message`."""
    for _ in range(values.rng.randint(1, 3)):
        target = message
        # Walk down into set message fields now and then.
        for _ in range(3):
            subs = [f for f in target.DESCRIPTOR.fields
                    if f.type == pb_descriptor.FieldDescriptor.TYPE_MESSAGE
                    and f.label != pb_descriptor.FieldDescriptor.LABEL_REPEATED
                    and target.HasField(f.name)]
            if not subs or values.rng.random() < 0.4:
                break
            target = getattr(target, values.rng.choice(subs).name)
        fields = target.DESCRIPTOR.fields
        if fields:
            set_random(target, values.rng.choice(fields), values, 1)


class Fuzzer:
    def __init__(self, args, pb2):
        self.args = args
        self.pb2 = pb2
        self.rng = random.Random(args.seed)
        self.values = Values(self.rng)
        self.channel = grpc.insecure_channel(
            args.address, options=[("grpc.max_receive_message_length", 64 << 20),
                                   ("grpc.max_send_message_length", 64 << 20)])
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.service = self.pb2.DESCRIPTOR.services_by_name
        self.counts = collections.Counter()
        self.findings = []
        self.worker = ""
        self.worker_key = ""
        self.assignment = None  # the last Assignment handed to our worker
        self.job_name = args.job
        self.adapter = pack_adapter(args.adapter) if args.adapter else b""
        self.last_beat = 0.0
        self.templates = {}

    # -- calls --------------------------------------------------------------
    def call(self, service, method, request, metadata=(), timeout=3.0):
        """(code, details, responses) of one call; streams read to the end."""
        m = self.service[service].methods_by_name[method]
        path = "/%s/%s" % (self.service[service].full_name, method)
        out_cls = self._message_class(m.output_type)
        kwargs = dict(request_serializer=lambda x: x.SerializeToString(),
                      response_deserializer=out_cls.FromString)
        responses = []
        try:
            if m.client_streaming:
                fn = self.channel.stream_unary(path, **kwargs)
                responses.append(fn(iter(request), metadata=metadata, timeout=timeout))
            elif m.server_streaming:
                fn = self.channel.unary_stream(path, **kwargs)
                for r in fn(request, metadata=metadata, timeout=timeout):
                    responses.append(r)
                    if len(responses) >= 200:
                        break
            else:
                fn = self.channel.unary_unary(path, **kwargs)
                responses.append(fn(request, metadata=metadata, timeout=timeout))
            return grpc.StatusCode.OK, "", responses
        except grpc.RpcError as e:
            return e.code(), e.details() or "", responses

    def _message_class(self, descriptor):
        from google.protobuf import message_factory
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return message_factory.MessageFactory().GetPrototype(descriptor)

    def new(self, method, service="JobService"):
        m = self.service[service].methods_by_name[method]
        return self._message_class(m.input_type)()

    def worker_metadata(self):
        if self.worker_key and self.rng.random() < 0.85:
            return ((WORKER_KEY_METADATA, self.worker_key),)
        if self.rng.random() < 0.5:
            # Metadata values a client library lets through: printable ASCII.
            text = "".join(c for c in self.values.string()[:100] if " " <= c <= "~")
            return ((WORKER_KEY_METADATA, text.strip()),)
        return ()

    # -- set-up -------------------------------------------------------------
    def setup(self):
        get = self.new("GetJob")
        get.name = self.job_name
        code, details, responses = self.call("JobService", "GetJob", get)
        if code != grpc.StatusCode.OK:
            raise SystemExit("GetJob %s: %s %s" % (self.job_name, code, details))
        self.job_before = responses[0]
        self.values.names += [self.job_name] + [a.name for a in self.job_before.artifacts]
        self.register()
        # Valid requests, mutated later.
        t = self.templates
        t[("JobService", "SubmitJob")] = lambda: self._submit_template()
        t[("JobService", "GetJob")] = lambda: self._named("GetJob", name=self.job_name)
        t[("JobService", "ListJobs")] = lambda: self._named("ListJobs", page_size=5)
        t[("JobService", "WatchJob")] = lambda: self._named("WatchJob", name=self.job_name)
        t[("JobService", "CancelJob")] = lambda: self._named(
            "CancelJob", name=self.rng.choice(self.values.names))
        t[("JobService", "DownloadArtifact")] = lambda: self._named(
            "DownloadArtifact", name=self.rng.choice(self.values.names))
        t[("JobService", "ListWorkers")] = lambda: self._named("ListWorkers")
        t[("JobService", "GetStageLogs")] = lambda: self._stage_logs_template()

    def _named(self, method, service="JobService", **fields):
        r = self.new(method, service)
        for k, v in fields.items():
            if k in r.DESCRIPTOR.fields_by_name:
                setattr(r, k, v)
        return r

    def _submit_template(self):
        r = self.new("SubmitJob")
        r.spec.CopyFrom(self.job_before.spec)
        r.kind = self.job_before.kind
        if self.rng.random() < 0.3:
            r.request_id = "fuzz-%d" % self.rng.randint(0, 20)
        return r

    def _stage_logs_template(self):
        r = self._named("GetStageLogs", name=self.job_name)
        stages = [s.id for s in self.job_before.stages]
        if stages:
            r.stage = self.rng.choice(stages)
        return r

    def register(self):
        r = self.new("RegisterWorker", "WorkerService")
        r.worker.hostname = "api-fuzz"
        code, details, responses = self.call("WorkerService", "RegisterWorker", r)
        if code != grpc.StatusCode.OK:
            raise SystemExit("RegisterWorker: %s %s" % (code, details))
        self.worker = responses[0].name
        self.worker_key = responses[0].worker_key
        self.values.names.append(self.worker)

    def worker_template(self, method):
        a = self.assignment
        aid = a.id if a is not None else ""
        if method == "RegisterWorker":
            r = self.new(method, "WorkerService")
            r.worker.hostname = "api-fuzz-%d" % self.rng.randint(0, 5)
            return r
        if method in ("Heartbeat", "PollAssignment"):
            r = self._named(method, "WorkerService", worker=self.worker)
            if method == "PollAssignment":
                r.wait_seconds = self.rng.choice([0.0, 0.5, 1.0])
            return r
        if method == "ReportProgress":
            r = self._named(method, "WorkerService", assignment=aid, worker=self.worker)
            r.progress.step = self.rng.randint(0, 30)
            return r
        if method == "CompleteAssignment":
            return self._named(method, "WorkerService", assignment=aid, worker=self.worker,
                               ok=self.rng.random() < 0.5)
        if method == "FetchArtifact":
            return self._named(method, "WorkerService", name=self.rng.choice(self.values.names))
        if method in ("StoreSet", "StoreGet"):
            r = self._named(method, "WorkerService", assignment=aid, worker=self.worker,
                            group=a.group if a is not None else "g")
            if method == "StoreSet":
                r.key, r.value = "k%d" % self.rng.randint(0, 3), b"v"
            else:
                r.keys.append("k%d" % self.rng.randint(0, 3))
                r.wait_seconds = 0.2
            return r
        raise ValueError(method)

    def upload_requests(self, mutated):
        """A stream for UploadArtifact: a header, then data pieces."""
        req_cls = type(self.new("UploadArtifact", "WorkerService"))
        first = req_cls()
        first.header.assignment = self.assignment.id if self.assignment is not None else ""
        first.header.worker = self.worker
        first.header.kind = self.rng.choice(["adapter", "checkpoint", "other", ""])
        first.header.step = self.rng.randint(0, 30)
        if mutated:
            mutate(first, self.values)
        stream = [first]
        if self.adapter and self.rng.random() < 0.5:
            # A real adapter archive, whole or damaged, with its hash or not.
            data = bytearray(self.adapter)
            damage = self.rng.random()
            if damage < 0.3:
                for _ in range(self.rng.randint(1, 8)):
                    data[self.rng.randrange(len(data))] = self.rng.getrandbits(8)
            elif damage < 0.4:
                del data[self.rng.randrange(len(data)):]
            data = bytes(data)
            cut = self.rng.randrange(len(data) + 1)
            for part in (data[:cut], data[cut:]):
                piece = req_cls()
                piece.data = part
                stream.append(piece)
            last = req_cls()
            last.sha256 = (hashlib.sha256(data).hexdigest() if self.rng.random() < 0.8
                           else self.rng.choice(["", "0" * 64, self.values.string()]))
            stream.append(last)
            return stream
        for _ in range(self.rng.randint(0, 3)):
            piece = req_cls()
            if self.rng.random() < 0.8:
                piece.data = self.values.bytes_()
            else:
                fill_random(piece, self.values)
            stream.append(piece)
        if self.rng.random() < 0.5:
            last = req_cls()
            last.sha256 = self.rng.choice(["", "0" * 64, self.values.string()])
            stream.append(last)
        return stream

    # -- the run ------------------------------------------------------------
    def keep_alive(self):
        """What a live worker does between the random calls: a heartbeat
        every half second (so that the lease holds and the key stays valid)
        and, while it holds nothing, a poll for an assignment."""
        now = time.time()
        if now - self.last_beat < 0.5:
            return
        self.last_beat = now
        md = ((WORKER_KEY_METADATA, self.worker_key),)
        beat = self._named("Heartbeat", "WorkerService", worker=self.worker)
        code, _, _ = self.call("WorkerService", "Heartbeat", beat, md)
        if code == grpc.StatusCode.NOT_FOUND:  # declared lost (or a fuzzed call did it)
            self.register()
            self.assignment = None
            return
        if self.assignment is None or self.rng.random() < 0.1:
            poll = self._named("PollAssignment", "WorkerService", worker=self.worker)
            code, _, responses = self.call("WorkerService", "PollAssignment", poll, md)
            self.learn("PollAssignment", code, responses)

    def http_one(self, i):
        """One request to the coordinator's HTTP listener (--http)."""
        r = self.rng
        names = self.values.names
        job_id = (r.choice(names).split("/", 1)[-1] if names and r.random() < 0.6
                  else r.choice(["", "x", "..", "%2e%2e", "a%2Fb", "%00", "%0d%0a", "é",
                                 "a" * 3000, self.values.string()]))
        value = lambda: r.choice(["", "0", "1", "-1", "9" * 30, "1e3", "0x10", " 5", "%00",
                                  "%0a", "500", "abc", self.values.string()])
        path = r.choice([
            "/api/jobs", "/api/jobs?page_size=%s&page_token=%s" % (value(), value()),
            "/api/jobs/" + job_id, "/api/jobs/%s/events?after=%s&limit=%s" % (job_id, value(),
                                                                             value()),
            "/api/jobs/%s/logs?stage=%s&after_line=%s&page_size=%s" % (job_id, value(), value(),
                                                                      value()),
            "/api/workers", "/api/" + job_id, "/api/jobs/%s/%s" % (job_id, value()),
            "/download/" + (r.choice(names) if names else "x"), "/download/" + job_id,
            "/static/" + r.choice(["app.js", "app.css", "../index.html", job_id]),
            "/metrics", "/", "/index.html", "//api/jobs", "/api/../metrics", "/" + job_id,
        ])
        path = "".join(c if " " < c < "\x7f" else "%%%02X" % ord(c) if ord(c) < 256 else
                       "".join("%%%02X" % b for b in c.encode("utf-8")) for c in path)
        method = r.choice(["GET"] * 8 + ["HEAD", "POST", "DELETE", "OPTIONS"])
        headers = {}
        if r.random() < 0.3:
            headers["Range"] = r.choice(["bytes=0-10", "bytes=5-", "bytes=-3", "bytes=99999999-",
                                         "bytes=10-5", "bytes=a-b", "bytes=0-1,4-5", "items=0-1"])
        host, port = self.args.http.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        status, body, problem = 0, b"", None
        try:
            conn.request(method, path, body=self.values.bytes_()[:2000] if method == "POST"
                         else None, headers=headers)
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
            content_type = resp.getheader("Content-Type") or ""
        except (OSError, http.client.HTTPException) as e:
            problem = "no answer (%s)" % e
        finally:
            conn.close()
        self.counts[("HTTP " + method, str(status))] += 1
        if problem is None and status >= 500 and status != 503:
            problem = "HTTP status %d" % status
        elif problem is None and status >= 400 and b"multipart/byteranges" in (
                content_type.encode() + body[:200]):
            problem = "a Range applied to an error"  # RFC 9110: only a 200 has ranges
        elif problem is None and "Range" in headers and status == 416:
            return  # an unsatisfiable or malformed range: nothing else to check
        elif (problem is None and method == "GET" and path.startswith("/api/") and status >= 400
              and status not in (413, 414, 431)):  # the HTTP library's own, before routing
            try:
                error = json.loads(body)["error"]
                if "\n" in error or len(error) > MAX_DETAILS:
                    problem = "an error of %d bytes or more than one line" % len(error)
            except (ValueError, KeyError, TypeError):
                problem = "an error body that is not JSON {\"error\": ...}: %r" % body[:200]
            if "json" not in content_type:
                problem = problem or "an error with Content-Type %r" % content_type
        if problem is not None:
            self.findings.append("request %d: HTTP %s %s gave %s: %r" % (
                i, method, path[:500], problem, body[:300]))

    def one(self, i):
        if self.args.http and self.rng.random() < 0.25:
            self.http_one(i)
            return
        self.keep_alive()
        service = self.rng.choice(["JobService", "JobService", "WorkerService"])
        methods = list(self.service[service].methods_by_name)
        method = self.rng.choice(methods)
        templated = self.rng.random() < 0.6
        metadata = self.worker_metadata() if service == "WorkerService" else ()
        if method == "UploadArtifact":
            request = self.upload_requests(mutated=not templated)
        else:
            if templated:
                request = (self.templates[(service, method)]() if service == "JobService"
                           else self.worker_template(method))
                if self.rng.random() < 0.9:
                    mutate(request, self.values)
            else:
                request = self.new(method, service)
                fill_random(request, self.values)
        code, details, responses = self.call(service, method, request, metadata)
        self.counts[(method, code.name)] += 1
        self.learn(method, code, responses)
        problem = None
        if code not in ALLOWED and not (code == grpc.StatusCode.DEADLINE_EXCEEDED
                                        and method in WAITING_CALLS):
            problem = "status %s" % code.name
        elif len(details.encode("utf-8", "replace")) > MAX_DETAILS:
            problem = "a message of %d bytes" % len(details)
        elif "\n" in details:
            problem = "a message of more than one line"
        if problem is not None:
            shown = (request if not isinstance(request, list) else request[0])
            text = text_format.MessageToString(shown, as_utf8=False)
            if len(text) > 3000:
                text = text[:3000] + "... (cut)"
            self.findings.append("request %d: %s/%s gave %s: %r\n%s" % (
                i, service, method, problem, details[:500], text))

    def learn(self, method, code, responses):
        if code != grpc.StatusCode.OK:
            return
        for r in responses:
            if method == "PollAssignment" and r.HasField("assignment"):
                self.assignment = r.assignment
                self.values.names += [r.assignment.id, r.assignment.stage]
                self.values.names += [x.artifact for x in r.assignment.inputs]
            elif method in ("SubmitJob", "GetJob", "CancelJob"):
                self.values.names.append(r.name)
            elif method == "UploadArtifact":
                self.values.names.append(r.artifact.name)
            elif method == "RegisterWorker" and r.name != self.worker:
                self.values.names.append(r.name)
        if len(self.values.names) > 200:
            del self.values.names[1:100]

    def finish(self):
        get = self.new("GetJob")
        get.name = self.job_name
        code, details, responses = self.call("JobService", "GetJob", get)
        if code != grpc.StatusCode.OK:
            self.findings.append("after the run GetJob %s: %s %s" % (self.job_name, code.name,
                                                                    details))
        elif responses[0].spec != self.job_before.spec:
            self.findings.append("after the run %s holds another spec" % self.job_name)
        # Every page of ListJobs still reads.
        token, pages = "", 0
        while True:
            lst = self.new("ListJobs")
            lst.page_size = 100
            lst.page_token = token
            code, details, responses = self.call("JobService", "ListJobs", lst, timeout=30)
            if code != grpc.StatusCode.OK:
                self.findings.append("after the run ListJobs page %d: %s %s" % (
                    pages, code.name, details))
                break
            pages += 1
            token = responses[0].next_page_token
            if not token or pages > 10000:
                break


def pack_adapter(folder):
    """The folder's files as a ustar archive, as a worker uploads an adapter."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:  # follows links
                data = f.read()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def load_modules(gen):
    sys.path.insert(0, gen)
    from mpt_client._gen import service_pb2  # noqa: E402
    return service_pb2


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address")
    parser.add_argument("job")
    parser.add_argument("--gen", required=True,
                        help="folder holding mpt_client/_gen (python/generate_proto.py --out)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--report", default="")
    parser.add_argument("--http", default="",
                        help="the coordinator's HTTP listener (host:port); a quarter of the "
                             "requests then go there")
    parser.add_argument("--adapter", default="",
                        help="a PEFT adapter folder of JOB's prompt shape; uploads send it, "
                             "whole or damaged, half of the time")
    args = parser.parse_args()
    fuzzer = Fuzzer(args, load_modules(args.gen))
    fuzzer.setup()
    start = time.time()
    for i in range(args.requests):
        fuzzer.one(i)
    fuzzer.finish()
    took = time.time() - start
    lines = ["api_fuzz: seed %d, %d requests in %.1f s, %d findings" % (
        args.seed, args.requests, took, len(fuzzer.findings))]
    by_method = collections.defaultdict(list)
    for (method, code), n in sorted(fuzzer.counts.items()):
        by_method[method].append("%s %d" % (code, n))
    for method in sorted(by_method):
        lines.append("  %-18s %s" % (method, ", ".join(by_method[method])))
    text = "\n".join(lines)
    print(text)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")
            for finding in fuzzer.findings:
                f.write("\n" + finding + "\n")
    for finding in fuzzer.findings[:20]:
        print("FINDING " + finding, file=sys.stderr)
    return 1 if fuzzer.findings else 0


if __name__ == "__main__":
    sys.exit(main())
