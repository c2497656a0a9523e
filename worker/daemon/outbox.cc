#include "worker/daemon/outbox.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/artifact_pack.h"
#include "common/logging.h"
#include "common/progress/progress_proto.h"

namespace mpt {
namespace {

bool Retryable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded;
}

}  // namespace

void ProgressOutbox::OnEvent(const ProgressEvent& event) {
  if (!reports_) return;
  if (event.kind == ProgressKind::kCheckpoint) {
    // Packed here, on the training thread, so that the trainer's next
    // write cannot change the folder under the archive.
    absl::StatusOr<std::string> blob = PackFolder(event.message);
    if (!blob.ok()) {
      MPT_LOG(WARNING) << running_->id << ": checkpoint not uploaded: " << blob.status();
      return;
    }
    absl::MutexLock lock(&mu_);
    checkpoint_ = Checkpoint{event.step, std::move(*blob)};
    return;
  }
  mpt::v1::ReportProgressRequest request;
  request.set_assignment(running_->id);
  request.set_worker(running_->worker);
  *request.mutable_progress() = ProgressToProto(event);
  request.set_message(event.message.empty()
                          ? std::string(ProgressKindName(event.kind))
                          : absl::StrCat(ProgressKindName(event.kind), ": ", event.message));
  absl::MutexLock lock(&mu_);
  last_progress_ = request.progress();
  if (event.kind == ProgressKind::kStep) {
    step_ = std::move(request);
  } else {
    if (queue_.size() >= kMaxQueued) queue_.pop_front();
    queue_.push_back(std::move(request));
  }
}

void ProgressOutbox::Close(absl::Duration flush) {
  {
    absl::MutexLock lock(&mu_);
    if (closing_) return;
    closing_ = true;
    flush_deadline_ = absl::Now() + flush;
  }
  if (thread_.joinable()) thread_.join();
}

bool ProgressOutbox::Settle(const absl::Status& status, const char* what) {
  if (status.ok()) {
    backoff_ = options_.min_backoff;
    return true;
  }
  if (Retryable(status)) {
    absl::MutexLock lock(&mu_);
    retry_after_ = absl::Now() + backoff_;
    backoff_ = std::min(backoff_ * 2, options_.max_backoff);
    return false;
  }
  if (status.code() == absl::StatusCode::kNotFound ||
      status.code() == absl::StatusCode::kFailedPrecondition) {
    running_->Cancel(absl::StrCat("the coordinator refused ", what, ": ", status.message()));
  } else {
    MPT_LOG(WARNING) << running_->id << ": " << what << " failed: " << status;
  }
  return true;
}

void ProgressOutbox::Loop() {
  while (true) {
    std::optional<mpt::v1::ReportProgressRequest> report;
    std::optional<Checkpoint> checkpoint;
    bool from_queue = false;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(this, &ProgressOutbox::HasWork),
                         absl::Milliseconds(100));
      const absl::Time now = absl::Now();
      if (Done(now)) return;
      if (now < retry_after_) continue;
      if (!queue_.empty()) {
        report = std::move(queue_.front());
        queue_.pop_front();
        from_queue = true;
      } else if (!closing_ && step_.has_value() && now >= next_step_time_) {
        report = std::move(step_);
        step_.reset();
        next_step_time_ = now + options_.progress_interval;
      } else if (!closing_ && checkpoint_.has_value()) {
        checkpoint = std::move(checkpoint_);
        checkpoint_.reset();
      } else {
        continue;
      }
    }
    if (report.has_value()) {
      absl::StatusOr<mpt::v1::ReportProgressResponse> response =
          client_->ReportProgress(*report);
      if (response.ok() && response->cancelled()) {
        running_->Cancel("cancelled by the coordinator");
      }
      if (!Settle(response.status(), "ReportProgress")) {
        absl::MutexLock lock(&mu_);
        if (from_queue) {
          queue_.push_front(std::move(*report));
        } else if (!step_.has_value()) {
          step_ = std::move(*report);
        }
      }
    } else if (checkpoint.has_value()) {
      absl::StatusOr<mpt::v1::Artifact> artifact =
          client_->UploadArtifact(running_->worker, running_->id, "checkpoint",
                                          checkpoint->step, checkpoint->blob);
      if (artifact.ok()) {
        MPT_LOG(INFO) << running_->id << ": checkpoint at step " << checkpoint->step
                      << " uploaded as " << artifact->name();
      }
      if (!Settle(artifact.status(), "UploadArtifact(checkpoint)")) {
        absl::MutexLock lock(&mu_);
        if (!checkpoint_.has_value()) checkpoint_ = std::move(checkpoint);
      }
    }
  }
}

}  // namespace mpt
