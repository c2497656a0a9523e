// GetJob and ListJobs in wire form (what the gRPC layer sends): bytes
// spliced from the stored records, or a published job's cached bytes, must
// parse as exactly the messages the proto form returns, and every listed job
// as GetJob shows it: every page, filter, token, finished and unfinished
// job, before and after a restart, and after progress that only memory
// holds. Plus the wire helpers themselves.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "proto/mpt/v1/service.pb.h"
#include "server/coordinator_state.pb.h"
#include "server/proto_wire.h"
#include "tests/server/coordinator_test_util.h"

namespace mpt {
namespace {

using google::protobuf::util::MessageDifferencer;

TEST(ProtoWireTest, FindsAndAppendsLengthDelimitedFields) {
  coordinator::JobRecord record;
  record.mutable_job()->set_name("jobs/abc");
  record.mutable_job()->set_display_name("x");
  record.set_create_seq(7);
  const std::string bytes = record.SerializeAsString();
  auto job = FindLengthDelimitedField(bytes, 1);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(std::string(*job), record.job().SerializeAsString());

  // Absent: empty.
  auto absent = FindLengthDelimitedField(bytes, 9);
  ASSERT_TRUE(absent.ok());
  EXPECT_TRUE(absent->empty());

  // Appended stages parse as Job.stages.
  std::string out(job->data(), job->size());
  mpt::v1::Stage stage;
  stage.set_id("source/a");
  stage.set_state(mpt::v1::RUNNING);
  AppendLengthDelimitedField(mpt::v1::Job::kStagesFieldNumber, stage.SerializeAsString(), &out);
  mpt::v1::Job parsed;
  ASSERT_TRUE(parsed.ParseFromString(out));
  EXPECT_EQ(parsed.name(), "jobs/abc");
  ASSERT_EQ(parsed.stages_size(), 1);
  EXPECT_EQ(parsed.stages(0).id(), "source/a");

  // Dropping fields keeps every other field as it was.
  mpt::v1::Job full;
  full.set_name("jobs/abc");
  full.mutable_spec()->set_base_model("/models/t5");
  full.add_artifacts()->set_name("jobs/abc/artifacts/x");
  full.add_stages()->set_id("source/a");
  full.set_priority(3);
  auto dropped = RemoveLengthDelimitedFields(full.SerializeAsString(),
                                             {mpt::v1::Job::kSpecFieldNumber,
                                              mpt::v1::Job::kArtifactsFieldNumber});
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  mpt::v1::Job basic;
  ASSERT_TRUE(basic.ParseFromString(*dropped));
  mpt::v1::Job expected_basic = full;
  expected_basic.clear_spec();
  expected_basic.clear_artifacts();
  EXPECT_TRUE(MessageDifferencer::Equals(basic, expected_basic)) << basic.ShortDebugString();
  EXPECT_EQ(RemoveLengthDelimitedFields(bytes.substr(0, bytes.size() - 1), {1}).status().code(),
            absl::StatusCode::kDataLoss);

  // Truncated and duplicated fields are DATA_LOSS.
  EXPECT_EQ(FindLengthDelimitedField(bytes.substr(0, bytes.size() - 1), 1).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(FindLengthDelimitedField(bytes + bytes, 1).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(FindLengthDelimitedField(std::string("\x0b", 1), 1).status().code(),
            absl::StatusCode::kDataLoss);  // a group tag
  // Field numbers 0 and 2^29 (protobuf's parser refuses both).
  EXPECT_EQ(FindLengthDelimitedField(std::string("\x00\x01", 2), 1).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(FindLengthDelimitedField(std::string("\x80\x80\x80\x80\x10\x01", 6), 1)
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  EXPECT_TRUE(FindLengthDelimitedField(std::string("\xf8\xff\xff\xff\x0f\x01", 6), 1).ok());
}

class SerializedReadsTest : public testing::CoordinatorTest {
 protected:
  void ExpectSameJob(const std::string& name) {
    auto proto = core_->GetJob(name);
    auto wire = core_->GetJobSerialized(name);
    ASSERT_EQ(proto.ok(), wire.ok()) << name;
    if (!proto.ok()) {
      EXPECT_EQ(proto.status().code(), wire.status().code());
      return;
    }
    mpt::v1::Job parsed;
    ASSERT_TRUE(parsed.ParseFromString(**wire));
    EXPECT_TRUE(MessageDifferencer::Equals(parsed, *proto))
        << "wire:\n" << parsed.DebugString() << "proto:\n" << proto->DebugString();
  }

  // Walks every page of `request`: the jobs of `names` (in creation order)
  // that match its filters, newest first, each exactly as GetJob shows it;
  // the proto form the same pages.
  void ExpectPages(mpt::v1::ListJobsRequest request, const std::vector<std::string>& names) {
    std::vector<std::string> expected;
    for (auto it = names.rbegin(); it != names.rend(); ++it) {
      auto job = core_->GetJob(*it);
      ASSERT_TRUE(job.ok()) << job.status();
      const bool state_ok =
          request.states().empty() ||
          std::find(request.states().begin(), request.states().end(), job->state()) !=
              request.states().end();
      const bool kind_ok =
          request.kinds().empty() ||
          std::find(request.kinds().begin(), request.kinds().end(), job->kind()) !=
              request.kinds().end();
      if (state_ok && kind_ok) expected.push_back(*it);
    }
    std::vector<std::string> seen;
    mpt::v1::ListJobsRequest basic_request = request;
    basic_request.set_view(mpt::v1::JOB_VIEW_BASIC);
    for (int pages = 0; pages < 100; ++pages) {
      auto proto = core_->ListJobs(request);
      auto wire = core_->ListJobsSerialized(request);
      auto basic = core_->ListJobsSerialized(basic_request);
      ASSERT_TRUE(proto.ok()) << proto.status();
      ASSERT_TRUE(wire.ok()) << wire.status();
      ASSERT_TRUE(basic.ok()) << basic.status();
      mpt::v1::ListJobsResponse parsed, parsed_basic;
      ASSERT_TRUE(parsed.ParseFromString(*wire));
      ASSERT_TRUE(parsed_basic.ParseFromString(*basic));
      EXPECT_TRUE(MessageDifferencer::Equals(parsed, *proto));
      // The basic view: the same page, each job without spec and artefacts.
      ASSERT_EQ(parsed_basic.jobs_size(), parsed.jobs_size());
      EXPECT_EQ(parsed_basic.next_page_token(), parsed.next_page_token());
      for (int i = 0; i < parsed.jobs_size(); ++i) {
        mpt::v1::Job stripped = parsed.jobs(i);
        stripped.clear_spec();
        stripped.clear_artifacts();
        EXPECT_TRUE(MessageDifferencer::Equals(parsed_basic.jobs(i), stripped))
            << parsed_basic.jobs(i).ShortDebugString();
      }
      for (const mpt::v1::Job& job : parsed.jobs()) {
        seen.push_back(job.name());
        auto shown = core_->GetJob(job.name());
        ASSERT_TRUE(shown.ok()) << shown.status();
        EXPECT_TRUE(MessageDifferencer::Equals(job, *shown))
            << "listed:\n" << job.DebugString() << "GetJob:\n" << shown->DebugString();
      }
      if (parsed.next_page_token().empty()) {
        EXPECT_EQ(seen, expected);
        return;
      }
      request.set_page_token(parsed.next_page_token());
      basic_request.set_page_token(parsed.next_page_token());
    }
    ADD_FAILURE() << "too many pages";
  }

  void ExpectAllSame(const std::vector<std::string>& names) {
    for (const std::string& name : names) ExpectSameJob(name);
    for (int page_size : {0, 1, 2, 3, 50}) {
      mpt::v1::ListJobsRequest r;
      r.set_page_size(page_size);
      ExpectPages(r, names);
      r.add_states(mpt::v1::QUEUED);
      ExpectPages(r, names);
      r.add_states(mpt::v1::CANCELLED);
      ExpectPages(r, names);
      r.clear_states();
      r.add_states(mpt::v1::RUNNING);
      ExpectPages(r, names);
      r.clear_states();
      r.add_kinds(mpt::v1::PIPELINE);
      ExpectPages(r, names);
    }
  }
};

TEST_F(SerializedReadsTest, WireFormMatchesTheProtoForm) {
  OpenFresh("serialized_reads", /*on_disk=*/true);
  std::vector<std::string> names;
  for (int i = 0; i < 5; ++i) {
    names.push_back(Submit(testing::PipelineRequest({"a", "b", "c"}, {"t1", "t2"})));
    names.push_back(Submit(testing::SourceRequest("s" + std::to_string(i))));
  }
  // Finished jobs are read from the store.
  for (int i = 0; i < 10; i += 3) ASSERT_TRUE(core_->CancelJob(names[i]).ok());
  ExpectAllSame(names);

  // A worker's progress that only memory shows (under the event rate
  // limit) reaches the serialized job too.
  const std::string worker = testing::Register(core_.get());
  auto a = core_->PollAssignment(worker, absl::Now());
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(a->has_value());
  for (int step = 1; step <= 3; ++step) {
    mpt::v1::ReportProgressRequest progress;
    progress.set_assignment((*a)->id());
    progress.set_worker(worker);
    progress.mutable_progress()->set_step(step);
    progress.mutable_progress()->set_total_steps(10);
    ASSERT_TRUE(core_->ReportProgress(progress).ok());
    ExpectSameJob((*a)->job());
    auto wire = core_->GetJobSerialized((*a)->job());
    ASSERT_TRUE(wire.ok());
    mpt::v1::Job parsed;
    ASSERT_TRUE(parsed.ParseFromString(**wire));
    EXPECT_EQ(parsed.progress().step(), step);
  }
  ExpectAllSame(names);

  // After a restart nothing is published: everything comes from the store.
  Reopen();
  ExpectAllSame(names);

  // Errors are the proto form's.
  ExpectSameJob("jobs/doesnotexist");
  ExpectSameJob("not-a-job-name");
  mpt::v1::ListJobsRequest bad;
  bad.set_page_token("garbage!");
  EXPECT_EQ(core_->ListJobsSerialized(bad).status().code(), absl::StatusCode::kInvalidArgument);
  mpt::v1::ListJobsRequest bad_view;
  bad_view.set_view(static_cast<mpt::v1::JobView>(7));
  auto refused = core_->ListJobsSerialized(bad_view);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("view"), std::string::npos) << refused.status();
}

}  // namespace
}  // namespace mpt
