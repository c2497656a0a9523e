#include "server/resource_names.h"

#include <cstdint>
#include <string>

#include "absl/random/random.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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

TEST(ResourceNamesTest, LongOrControlNamesAreRefusedWithoutBeingRepeated) {
  const std::string long_id(20000, 'a');
  for (const std::string& bad :
       {"jobs/" + long_id, "jobs/" + long_id + "/artifacts/x", "jobs/x/artifacts/" + long_id}) {
    for (absl::Status s : {CheckJobName(bad, "name"), CheckArtifactName(bad, "name")}) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_LT(s.message().size(), 300u) << s.message().substr(0, 300);
      EXPECT_NE(s.message().find(std::to_string(bad.size()) + " bytes"), std::string::npos)
          << s.message().substr(0, 300);
    }
  }
  // The longest accepted name.
  EXPECT_TRUE(CheckJobName("jobs/" + std::string(kMaxResourceNameBytes - 5, 'b')).ok());
  EXPECT_FALSE(CheckJobName("jobs/" + std::string(kMaxResourceNameBytes - 4, 'b')).ok());
  // A control character is shown escaped, never raw.
  absl::Status s = CheckJobName("jobs/a\x1b[2J/b", "name");
  EXPECT_EQ(s.message().find('\x1b'), std::string::npos) << s;
  EXPECT_NE(s.message().find("\\x1b"), std::string::npos) << s;
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

TEST(ResourceNamesTest, TimeOrderedIdsGrowNeverRepeatAndCarryTheTime) {
  absl::BitGen gen;
  auto value = [](const std::string& id) { return std::stoull(id, nullptr, 16); };
  const absl::Time t = absl::FromCivil(absl::CivilSecond(2026, 11, 30, 12, 0, 0),
                                       absl::UTCTimeZone());
  uint64_t last = 0;
  std::string previous;
  // Many ids in the same millisecond, then the clock going back a minute:
  // every id is 12 hex digits and larger than the one before.
  for (int i = 0; i < 3000; ++i) {
    const absl::Time now = i < 2000 ? t : t - absl::Minutes(1);
    const std::string id = TimeOrderedId(now, &last, gen);
    ASSERT_EQ(id.size(), 12u) << id;
    ASSERT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
    if (!previous.empty()) {
      ASSERT_GT(id, previous);  // fixed width: text order is value order
    }
    EXPECT_EQ(value(id), last);
    previous = id;
  }
  // The top 40 bits are the milliseconds since 2024-01-01.
  uint64_t fresh = 0;
  const uint64_t ms = absl::ToInt64Milliseconds(
      t - absl::FromCivil(absl::CivilSecond(2024, 1, 1, 0, 0, 0), absl::UTCTimeZone()));
  EXPECT_EQ(value(TimeOrderedId(t, &fresh, gen)) >> 8, ms);
  // A later time gives a larger id than an earlier one made apart from it.
  uint64_t a = 0, b = 0;
  EXPECT_LT(value(TimeOrderedId(t, &a, gen)),
            value(TimeOrderedId(t + absl::Milliseconds(1), &b, gen)));
  // Before the epoch: the time bits are 0, the ids still grow.
  uint64_t early = 0;
  const std::string e1 = TimeOrderedId(absl::UnixEpoch(), &early, gen);
  const std::string e2 = TimeOrderedId(absl::UnixEpoch(), &early, gen);
  EXPECT_EQ(value(e1) >> 8, 0u);
  EXPECT_GT(e2, e1);
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
