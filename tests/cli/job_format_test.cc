// Watch lines say once what happened: no kind repeated in the message.
#include "cli/job_format.h"

#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "common/progress/progress.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Line(const mpt::v1::JobEvent& event) {
  std::optional<ProgressEvent> e = ProgressEventFor(event);
  return e.has_value() ? FormatProgressLine(*e) : "";
}

TEST(WatchLine, JobStateSaidOnce) {
  mpt::v1::JobEvent event;
  event.set_job("jobs/j1");
  event.set_state(mpt::v1::QUEUED);
  event.set_message("submitted: 3 stages");
  EXPECT_EQ(Line(event), "[jobs/j1] QUEUED: submitted: 3 stages");
}

TEST(WatchLine, StepLineDoesNotRepeatTheKind) {
  mpt::v1::JobEvent event;
  event.set_job("jobs/j1");
  event.set_stage("source/max");
  event.set_stage_state(mpt::v1::RUNNING);
  event.set_message("STEP");
  mpt::v1::Progress* p = event.mutable_progress();
  p->set_stage("source");
  p->set_task("max");
  p->set_step(35);
  p->set_total_steps(300);
  (*p->mutable_losses())["loss"] = 0.5;
  p->set_eta_seconds(52);
  const std::string line = Line(event);
  EXPECT_THAT(line, HasSubstr("[source/max] STEP 35/300 (11.7%) loss=0.5"));
  EXPECT_THAT(line, HasSubstr("eta=52s"));
  EXPECT_FALSE(absl::EndsWith(line, "STEP")) << line;
  EXPECT_EQ(line.find("STEP"), line.rfind("STEP")) << line;
}

TEST(WatchLine, EvalShowsMetricsAndKeepsTheText) {
  mpt::v1::JobEvent event;
  event.set_stage("target/min");
  event.set_stage_state(mpt::v1::RUNNING);
  event.set_message("EVAL: best so far");
  mpt::v1::Progress* p = event.mutable_progress();
  p->set_step(100);
  p->set_total_steps(200);
  (*p->mutable_metrics())["min/accuracy"] = 0.875;
  const std::string line = Line(event);
  EXPECT_THAT(line, HasSubstr("[target/min] EVAL 100/200"));
  EXPECT_THAT(line, HasSubstr("min/accuracy=0.8750"));
  EXPECT_THAT(line, HasSubstr(": best so far"));
  EXPECT_THAT(line, Not(HasSubstr("EVAL: ")));
}

TEST(WatchLine, ATaskOfASharedStageIsKept) {
  mpt::v1::JobEvent event;
  event.set_stage("target/shared");
  event.set_stage_state(mpt::v1::RUNNING);
  mpt::v1::Progress* p = event.mutable_progress();
  p->set_task("min");
  p->set_step(2);
  p->set_total_steps(4);
  EXPECT_THAT(Line(event), HasSubstr("target/shared"));
  EXPECT_THAT(Line(event), HasSubstr("min"));
}

TEST(WatchLine, StageStateChange) {
  mpt::v1::JobEvent event;
  event.set_stage("distillation");
  event.set_stage_state(mpt::v1::RUNNING);
  event.set_message("on 2 workers");
  EXPECT_EQ(Line(event), "[distillation] RUNNING: on 2 workers");
}

TEST(FormatJob, ShowsTheModelAndAPrecisionTheSpecFixes) {
  mpt::v1::Job job;
  job.set_name("jobs/abc");
  job.mutable_spec()->set_base_model("/models/t5-base");
  std::string text = FormatJob(job);
  EXPECT_THAT(text, ::testing::HasSubstr("model:     /models/t5-base\n"));
  EXPECT_THAT(text, ::testing::Not(::testing::HasSubstr("autocast:")));
  job.mutable_spec()->set_autocast("bf16");
  EXPECT_THAT(FormatJob(job), ::testing::HasSubstr("autocast:  bf16\n"));
}

TEST(LogLineFormat, StageTimeSeverityAndText) {
  mpt::v1::LogLine l;
  l.set_stage("source/sst2");
  l.set_assignment("jobs/j/stages/source/sst2/attempts/1/ranks/0");
  l.mutable_time()->set_seconds(1700000000);  // 22:13:20 UTC
  l.mutable_time()->set_nanos(123000000);
  l.set_severity("WARNING");
  l.set_text("worker_daemon.cc:12] slow disk");
  EXPECT_EQ(FormatLogLine(l, absl::UTCTimeZone()),
            "[source/sst2] 22:13:20.123 WARNING worker_daemon.cc:12] slow disk");
}

TEST(LogLineFormat, ALaterAttemptAndAnotherRankAreShown) {
  mpt::v1::LogLine l;
  l.set_stage("distillation");
  l.set_assignment("jobs/j/stages/distillation/attempts/2/ranks/1");
  l.set_severity("ERROR");
  l.set_text("boom");
  EXPECT_EQ(FormatLogLine(l, absl::UTCTimeZone()),
            "[distillation attempt 2 rank 1] 00:00:00.000 ERROR boom");
  EXPECT_EQ(FormatDroppedLines("distillation", 1),
            "[distillation] ... 1 earlier line dropped (the coordinator keeps the newest lines "
            "of each stage)");
}

}  // namespace
}  // namespace mpt
