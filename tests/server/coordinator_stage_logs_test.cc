// Stage logs through the coordinator's core (no sockets): lines from
// ReportProgress (with and without progress, from any rank) and from
// CompleteAssignment are stored and read back with GetStageLogs; a failed
// stage's last lines carry its error; the log closes when the stage is
// final; resends after a lost answer or a restart are stored once; bad
// requests name their field.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/stage_logs.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using ::mpt::testing::CoordinatorTest;
using ::mpt::testing::HolderOf;
using ::mpt::testing::Poll;
using ::mpt::testing::Register;
using ::mpt::testing::SourceRequest;

mpt::v1::LogLine Line(int64_t sequence, const std::string& text,
                      const std::string& severity = "INFO") {
  mpt::v1::LogLine l;
  l.set_sequence(sequence);
  l.mutable_time()->set_seconds(1700000000);
  l.set_severity(severity);
  l.set_text(text);
  return l;
}

class StageLogsTest : public CoordinatorTest {
 protected:
  void SetUp() override { OpenFresh("stage_logs", /*on_disk=*/true); }

  absl::StatusOr<mpt::v1::GetStageLogsResponse> Logs(const std::string& job,
                                                     const std::string& stage = "",
                                                     int64_t after = 0) {
    mpt::v1::GetStageLogsRequest r;
    r.set_name(job);
    r.set_stage(stage);
    r.set_after_line(after);
    return core_->GetStageLogs(r);
  }

  absl::Status Report(const mpt::v1::Assignment& a, std::vector<mpt::v1::LogLine> lines,
                      bool with_progress) {
    mpt::v1::ReportProgressRequest r;
    r.set_assignment(a.id());
    r.set_worker(HolderOf(core_.get(), a.id()));
    if (with_progress) r.mutable_progress()->set_step(1);
    for (auto& l : lines) *r.add_log_lines() = std::move(l);
    return core_->ReportProgress(r).status();
  }

  static std::vector<std::string> Texts(const mpt::v1::GetStageLogsResponse& r) {
    std::vector<std::string> out;
    for (const auto& l : r.lines()) out.push_back(l.text());
    return out;
  }
};

TEST_F(StageLogsTest, ReportedAndCompletedLinesAreReadBackInOrder) {
  const std::string job = Submit(SourceRequest("a"));
  const std::string w = Register(core_.get());
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(Report(*a, {Line(1, "loading"), Line(2, "step 1")}, /*with_progress=*/true).ok());
  // A report of lines only (no progress) does not touch the progress.
  ASSERT_TRUE(Report(*a, {Line(3, "warming up", "WARNING")}, /*with_progress=*/false).ok());
  auto running = Logs(job, "source/a");
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_EQ(Texts(*running), (std::vector<std::string>{"loading", "step 1", "warming up"}));
  EXPECT_FALSE(running->done());
  EXPECT_EQ(running->last_line(), 3);
  EXPECT_EQ(running->lines(2).severity(), "WARNING");
  EXPECT_EQ(running->lines(0).assignment(), a->id());

  // Fails for good, with its error as the last line; line 3 is resent (its
  // answer was "lost") and stored once.
  mpt::v1::CompleteAssignmentRequest c;
  c.set_assignment(a->id());
  c.set_worker(w);
  c.set_ok(false);
  c.set_permanent(true);
  c.set_error("INVALID_ARGUMENT: train.jsonl:3: not JSON");
  *c.add_log_lines() = Line(3, "warming up", "WARNING");
  *c.add_log_lines() = Line(4, "failed: INVALID_ARGUMENT: train.jsonl:3: not JSON", "ERROR");
  ASSERT_TRUE(core_->CompleteAssignment(c).ok());
  EXPECT_EQ(mpt::testing::StageState(core_.get(), job, "source/a"), mpt::v1::FAILED);

  auto done = Logs(job, "source/a");
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->lines_size(), 4);
  EXPECT_EQ(done->lines(3).severity(), "ERROR");
  EXPECT_NE(done->lines(3).text().find("train.jsonl:3"), std::string::npos);
  EXPECT_TRUE(done->done());
  // Following on from the last line: nothing new, done.
  auto after = Logs(job, "source/a", done->last_line());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->lines_size(), 0);
  EXPECT_TRUE(after->done());
  EXPECT_EQ(after->last_line(), done->last_line());
  // All stages: the same lines.
  auto all = Logs(job);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->lines_size(), 4);
  EXPECT_TRUE(all->done());
}

TEST_F(StageLogsTest, ACancelledStageKeepsItsLastLines) {
  mpt::v1::SubmitJobRequest r = SourceRequest("a");
  *r.mutable_spec()->mutable_source()->add_tasks() = ::mpt::testing::Task("b");
  const std::string job = Submit(r);
  const std::string w1 = Register(core_.get());
  const std::string w2 = Register(core_.get());
  auto a = Poll(core_.get(), w1);
  auto b = Poll(core_.get(), w2);
  ASSERT_TRUE(a.has_value() && b.has_value());
  const mpt::v1::Assignment& on_a = a->stage() == "source/a" ? *a : *b;
  const mpt::v1::Assignment& on_b = a->stage() == "source/a" ? *b : *a;
  ASSERT_TRUE(core_->CancelJob(job).ok());
  // CANCELLING: the stopping worker's last lines still go in.
  mpt::v1::CompleteAssignmentRequest c;
  c.set_assignment(on_a.id());
  c.set_worker(HolderOf(core_.get(), on_a.id()));
  c.set_ok(false);
  c.set_error("cancelled");
  *c.add_log_lines() = Line(1, "stopping");
  ASSERT_TRUE(core_->CompleteAssignment(c).ok());
  // The other one's completion ends the cancellation, its lines stored with it.
  c.set_assignment(on_b.id());
  c.set_worker(HolderOf(core_.get(), on_b.id()));
  ASSERT_TRUE(core_->CompleteAssignment(c).ok());
  EXPECT_EQ(mpt::testing::JobStateOf(core_.get(), job), mpt::v1::CANCELLED);
  auto logs = Logs(job);
  ASSERT_TRUE(logs.ok()) << logs.status();
  EXPECT_EQ(Texts(*logs), (std::vector<std::string>{"stopping", "stopping"}));
  EXPECT_TRUE(logs->done());
}

TEST_F(StageLogsTest, LinesOfAFinalJobAreIgnored) {
  mpt::v1::SubmitJobRequest r = SourceRequest("a");
  *r.mutable_spec()->mutable_source()->add_tasks() = ::mpt::testing::Task("b");
  const std::string job = Submit(r);
  const std::string w1 = Register(core_.get());
  const std::string w2 = Register(core_.get());
  auto a = Poll(core_.get(), w1);
  auto b = Poll(core_.get(), w2);
  ASSERT_TRUE(a.has_value() && b.has_value());
  // One stage fails for good: the job FAILS and the other is cancelled, but
  // its worker still holds it and reports.
  ASSERT_TRUE(::mpt::testing::Complete(core_.get(), a->id(), false, "bad data", true).ok());
  EXPECT_EQ(mpt::testing::JobStateOf(core_.get(), job), mpt::v1::FAILED);
  ASSERT_TRUE(Report(*b, {Line(1, "too late")}, true).ok());
  auto logs = Logs(job, b->stage());
  ASSERT_TRUE(logs.ok()) << logs.status();
  EXPECT_EQ(logs->lines_size(), 0);
  EXPECT_TRUE(logs->done());
}

TEST_F(StageLogsTest, ResentLinesAfterARestartAreStoredOnce) {
  const std::string job = Submit(SourceRequest("a"));
  const std::string w = Register(core_.get());
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(Report(*a, {Line(1, "one"), Line(2, "two")}, true).ok());
  Reopen();
  // The worker keeps its assignment and sends the unacknowledged batch again.
  ASSERT_TRUE(core_->Heartbeat(w).ok());
  ASSERT_TRUE(Report(*a, {Line(1, "one"), Line(2, "two"), Line(3, "three")}, true).ok());
  auto logs = Logs(job, "source/a");
  ASSERT_TRUE(logs.ok()) << logs.status();
  EXPECT_EQ(Texts(*logs), (std::vector<std::string>{"one", "two", "three"}));
}

TEST_F(StageLogsTest, EveryRankOfAGangLogsAndALinesOnlyReportLeavesTheProgress) {
  const std::string w1 = Register(core_.get());
  const std::string w2 = Register(core_.get());
  const std::string job = Submit(::mpt::testing::PipelineRequest({"a"}, {}, /*world_size=*/2));
  auto s = Poll(core_.get(), w1);
  ASSERT_TRUE(s.has_value());
  ::mpt::testing::Finish(core_.get(), *s);
  auto r0 = Poll(core_.get(), w1);
  auto r1 = Poll(core_.get(), w2);
  ASSERT_TRUE(r0.has_value() && r1.has_value());
  ASSERT_EQ(r1->rank(), 1);
  {
    mpt::v1::ReportProgressRequest p;
    p.set_assignment(r0->id());
    p.set_worker(w1);
    p.mutable_progress()->set_step(7);
    ASSERT_TRUE(core_->ReportProgress(p).ok());
  }
  ASSERT_TRUE(Report(*r1, {Line(1, "rank 1 joined the gang")}, /*with_progress=*/false).ok());
  ASSERT_TRUE(Report(*r0, {Line(1, "rank 0 here")}, /*with_progress=*/false).ok());
  auto logs = Logs(job, "distillation");
  ASSERT_TRUE(logs.ok()) << logs.status();
  EXPECT_EQ(Texts(*logs), (std::vector<std::string>{"rank 1 joined the gang", "rank 0 here"}));
  EXPECT_EQ(logs->lines(0).assignment(), r1->id());
  auto j = core_->GetJob(job);
  ASSERT_TRUE(j.ok());
  const mpt::v1::Stage* d = ::mpt::testing::FindStage(*j, "distillation");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->progress().step(), 7) << "a report of lines only changed the progress";
}

TEST_F(StageLogsTest, BadRequestsNameTheirField) {
  const std::string job = Submit(SourceRequest("a"));
  auto bad_name = Logs("nope");
  EXPECT_EQ(bad_name.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_name.status().message().find("name"), std::string::npos);
  auto unknown_job = Logs("jobs/doesnotexist");
  EXPECT_EQ(unknown_job.status().code(), absl::StatusCode::kNotFound);
  auto malformed_stage = Logs(job, "bogus");
  EXPECT_EQ(malformed_stage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(malformed_stage.status().message().find("stage:"), std::string::npos);
  auto other_stage = Logs(job, "source/b");
  EXPECT_EQ(other_stage.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(other_stage.status().message().find("stage:"), std::string::npos);
  EXPECT_NE(other_stage.status().message().find("source/a"), std::string::npos)
      << other_stage.status();
  auto negative = Logs(job, "", -1);
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(negative.status().message().find("after_line"), std::string::npos);

  const std::string w = Register(core_.get());
  auto a = Poll(core_.get(), w);
  ASSERT_TRUE(a.has_value());
  absl::Status unordered = Report(*a, {Line(2, "x"), Line(2, "y")}, true);
  EXPECT_EQ(unordered.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unordered.message().find("log_lines[1].sequence"), std::string::npos) << unordered;
  absl::Status severity = Report(*a, {Line(1, "x", "LOUD")}, true);
  EXPECT_EQ(severity.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(severity.message().find("log_lines[0].severity"), std::string::npos) << severity;
}

TEST_F(StageLogsTest, AnOverlongLineIsCut) {
  mpt::v1::LogLine l = Line(1, std::string(kMaxLogLineBytes + 100, 'x'));
  mpt::v1::LogLine stored = StorableLogLine(l);
  EXPECT_EQ(stored.text().size(), static_cast<size_t>(kMaxLogLineBytes) + 6);
  EXPECT_EQ(stored.text().substr(stored.text().size() - 6), " [cut]");
}

}  // namespace
}  // namespace mpt
