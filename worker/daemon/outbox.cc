#include "worker/daemon/outbox.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/artifact_pack.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/progress/progress_proto.h"

namespace mpt {

void ProgressOutbox::OnEvent(const ProgressEvent& event) {
  if (!reports_) return;
  if (log_ != nullptr) log_->AddProgress(event);
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
    return;
  }
  // A step still waiting for its interval came before this event: it goes
  // first, so the coordinator sees every stage's last step (its final loss)
  // and sees it before the events that followed it.
  if (step_.has_value()) {
    Enqueue(std::move(*step_));
    step_.reset();
  }
  Enqueue(std::move(request));
}

void ProgressOutbox::Enqueue(mpt::v1::ReportProgressRequest request) {
  if (queue_.size() >= kMaxQueued) queue_.pop_front();
  queue_.push_back(std::move(request));
}

void ProgressOutbox::Close(absl::Duration flush) {
  {
    absl::MutexLock lock(&mu_);
    if (closing_) return;
    if (step_.has_value()) {  // the newest step, never sent: the last word
      Enqueue(std::move(*step_));
      step_.reset();
    }
    closing_ = true;
    flush_deadline_ = absl::Now() + flush;
  }
  if (thread_.joinable()) thread_.join();
}

int64_t ProgressOutbox::AttachLogLines(mpt::v1::ReportProgressRequest* report) {
  report->clear_log_lines();
  if (log_ == nullptr) return 0;
  std::vector<mpt::v1::LogLine> lines =
      log_->Pending(options_.log_batch_lines, options_.log_batch_bytes);
  if (lines.empty()) return 0;
  const int64_t last = lines.back().sequence();
  for (mpt::v1::LogLine& line : lines) *report->add_log_lines() = std::move(line);
  return last;
}

bool ProgressOutbox::Settle(const absl::Status& status, const char* what) {
  if (status.ok()) {
    backoff_ = options_.min_backoff;
    return true;
  }
  if (IsRetryableRpcError(status)) {
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
      } else if (!closing_ && log_ != nullptr && now >= next_log_time_ && log_->HasPending()) {
        // The lines alone: a report without progress.
        report.emplace();
        report->set_assignment(running_->id);
        report->set_worker(running_->worker);
      } else {
        continue;
      }
    }
    if (report.has_value()) {
      const int64_t last_line = AttachLogLines(&*report);
      if (last_line > 0) {
        absl::MutexLock lock(&mu_);
        next_log_time_ = absl::Now() + options_.log_interval;
      }
      absl::StatusOr<mpt::v1::ReportProgressResponse> response =
          client_->ReportProgress(*report);
      if (response.ok() && response->cancelled()) {
        running_->Cancel("cancelled by the coordinator");
      }
      if (!Settle(response.status(), "ReportProgress")) {
        absl::MutexLock lock(&mu_);
        if (!report->has_progress()) {
          // Lines only: they stay in the log and go with the next report.
        } else if (from_queue) {
          queue_.push_front(std::move(*report));
        } else if (!step_.has_value()) {
          step_ = std::move(*report);
        }
      } else if (last_line > 0) {
        log_->Acknowledge(last_line);
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
