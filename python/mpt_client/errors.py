"""Errors of the MPT service, mapped from gRPC status codes."""

import grpc


class MptError(Exception):
    """An error from the service or the client. `code` is the grpc.StatusCode
    (None for an error found by the client itself), `details` the message."""

    code = None

    def __init__(self, details, code=None):
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self):
        name = self.code.name if self.code is not None else type(self).__name__
        return "%s: %s" % (name, self.details)


class InvalidArgument(MptError):
    """A bad request; the message names the field."""
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MptError):
    """No such job or artefact."""
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MptError):
    """The request_id was used before for a different request."""
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(MptError):
    """The state does not allow it (e.g. cancelling a finished job); do not retry."""
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(MptError):
    """A missing or wrong token."""
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(Unauthenticated):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(MptError):
    """The coordinator cannot be reached now; a retry may succeed."""
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(Unavailable):
    """The call took longer than its timeout; a retry may succeed."""
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class DataLoss(MptError):
    """A download whose bytes or SHA-256 do not match."""
    code = grpc.StatusCode.DATA_LOSS


class Internal(MptError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Unauthenticated,
                PermissionDenied, Unavailable, DeadlineExceeded, DataLoss, Internal)
}
_BY_CODE[grpc.StatusCode.OUT_OF_RANGE] = InvalidArgument


def from_rpc_error(error):
    """The MptError for a grpc.RpcError (or anything with code() and details())."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, MptError)
    return cls(details or "", code=code)


def is_retryable(error):
    """True for the errors after which the same call may succeed once the
    coordinator is back: it could not be reached (Unavailable), gave no
    answer in time (DeadlineExceeded), or ended the call CANCELLED as a
    coordinator shutting down gracefully (SIGTERM) does; the client never
    cancels a call it would retry. The one rule of submit(), watch() and
    logs(follow=True), as in mptctl."""
    return isinstance(error, Unavailable) or getattr(error, "code", None) == grpc.StatusCode.CANCELLED


def what_happened(error):
    """What a retryable error (None: a stream that closed early) says about
    the coordinator, for messages."""
    if error is None:
        return "the stream closed early"
    if error.code == grpc.StatusCode.CANCELLED:
        return "it ended the call, as it does when it shuts down (%s)" % error
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer in time (%s)" % error
    return "unreachable (%s)" % error
