#include "server/resource_names.h"

#include <string>

#include "gtest/gtest.h"

namespace mpt {
namespace {

TEST(ResourceNamesTest, JobNames) {
  EXPECT_TRUE(CheckJobName("jobs/abc").ok());
  for (const char* bad : {"", "jobs/", "job/abc", "jobs/a/b", "abc"}) {
    absl::Status s = CheckJobName(bad, "parent");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(s.message().rfind("parent:", 0), 0u) << s;
  }
}

TEST(ResourceNamesTest, ArtifactNames) {
  EXPECT_TRUE(CheckArtifactName("jobs/a/artifacts/b", "f").ok());
  for (const char* bad : {"jobs/a/artifacts/", "jobs//artifacts/b", "jobs/a/files/b",
                          "jobs/a/artifacts/b/c"}) {
    EXPECT_EQ(CheckArtifactName(bad, "f").code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ResourceNamesTest, ArtifactIds) {
  EXPECT_EQ(ArtifactId("source/a", "adapter", 2, 0), "source-a-adapter-2");
  EXPECT_EQ(ArtifactId("distillation", "checkpoint", 1, 300), "distillation-checkpoint-1-300");
}

TEST(ResourceNamesTest, RandomIdsAreTwelveHexDigits) {
  absl::BitGen gen;
  const std::string id = RandomId(gen);
  ASSERT_EQ(id.size(), 12u);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
}

TEST(ResourceNamesTest, PageTokensRoundTripAndAreTiedToFilters) {
  mpt::v1::ListJobsRequest a;
  a.add_states(mpt::v1::RUNNING);
  a.add_states(mpt::v1::QUEUED);
  mpt::v1::ListJobsRequest same;
  same.add_states(mpt::v1::QUEUED);
  same.add_states(mpt::v1::RUNNING);
  same.add_states(mpt::v1::QUEUED);
  EXPECT_EQ(ListFilterKey(a), ListFilterKey(same));

  const std::string token = MakePageToken(42, ListFilterKey(a));
  absl::StatusOr<int64_t> seq = ParsePageToken(token, ListFilterKey(same));
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 42);

  mpt::v1::ListJobsRequest other;
  other.add_kinds(mpt::v1::PIPELINE);
  EXPECT_EQ(ParsePageToken(token, ListFilterKey(other)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParsePageToken("garbage!", "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ResourceNamesTest, TimestampsRoundTrip) {
  const absl::Time t = absl::FromUnixNanos(1700000000123456789);
  EXPECT_EQ(FromTimestamp(ToTimestamp(t)), t);
}

}  // namespace
}  // namespace mpt
