"""Python client of the Multitask Prompt Tuning service.

    from mpt_client import Client
    client = Client("127.0.0.1:50051")
    job = client.submit("demo/pipeline.textproto")
    for event in client.watch(job.name):
        print(event.sequence, event.message)
"""

from mpt_client.client import (ADAPTER_FILES, FINAL_STATES, Client, Job, JobEvent, JobKind,
                               JobState, PipelineSpec, check_download_folder, job_name,
                               new_request_id, read_spec, resolve_spec_paths, state_name)
from mpt_client.errors import (AlreadyExists, DataLoss, DeadlineExceeded, FailedPrecondition,
                               Internal, InvalidArgument, MptError, NotFound, PermissionDenied,
                               Unauthenticated, Unavailable)

__version__ = "0.1.0"

__all__ = [
    "Client", "Job", "JobEvent", "JobKind", "JobState", "PipelineSpec", "FINAL_STATES",
    "ADAPTER_FILES", "check_download_folder", "job_name", "new_request_id", "read_spec",
    "resolve_spec_paths", "state_name",
    "MptError", "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition",
    "Unauthenticated", "PermissionDenied", "Unavailable", "DeadlineExceeded", "DataLoss",
    "Internal",
]
