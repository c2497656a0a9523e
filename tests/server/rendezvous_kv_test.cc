#include "server/rendezvous_kv.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

TEST(RendezvousKvTest, SetThenGetReturnsValuesInOrder) {
  RendezvousKv kv;
  ASSERT_TRUE(kv.Set("g", "a", "1").ok());
  ASSERT_TRUE(kv.Set("g", "b", "2").ok());
  ASSERT_TRUE(kv.Set("g", "a", "3").ok());
  auto values = kv.Get("g", {"b", "a"}, absl::Now());
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, (std::vector<std::string>{"2", "3"}));
}

TEST(RendezvousKvTest, GetWaitsForALaterSet) {
  RendezvousKv kv;
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_TRUE(kv.Set("g", "k", "v").ok());
  });
  auto values = kv.Get("g", {"k"}, absl::Now() + absl::Seconds(10));
  setter.join();
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ((*values)[0], "v");
}

TEST(RendezvousKvTest, MissingKeysTimeOutNamingThem) {
  RendezvousKv kv;
  ASSERT_TRUE(kv.Set("g", "a", "1").ok());
  auto values = kv.Get("g", {"a", "zz"}, absl::Now() + absl::Milliseconds(10));
  ASSERT_EQ(values.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(values.status().message().find("zz"), std::string::npos);
}

TEST(RendezvousKvTest, EmptyNamesAndLargeValuesAreInvalid) {
  RendezvousKv kv;
  EXPECT_EQ(kv.Set("", "k", "v").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.Set("g", "", "v").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.Set("g", "k", std::string(RendezvousKv::kMaxValueBytes + 1, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.Get("g", {}, absl::Now()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.Get("g", {""}, absl::Now()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RendezvousKvTest, GroupKeyLimitIsResourceExhausted) {
  RendezvousKv kv;
  for (size_t i = 0; i < RendezvousKv::kMaxKeysPerGroup; ++i) {
    ASSERT_TRUE(kv.Set("g", std::to_string(i), "").ok());
  }
  EXPECT_EQ(kv.Set("g", "one-more", "").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(kv.Set("g", "0", "replaced").ok());  // replacing is fine
}

TEST(RendezvousKvTest, EraseGroupDropsItsKeys) {
  RendezvousKv kv;
  ASSERT_TRUE(kv.Set("g", "k", "v").ok());
  kv.EraseGroup("g");
  EXPECT_EQ(kv.Get("g", {"k"}, absl::Now()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(RendezvousKvTest, ShutdownWakesWaiters) {
  RendezvousKv kv;
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(50));
    kv.Shutdown();
  });
  auto values = kv.Get("g", {"k"}, absl::Now() + absl::Seconds(30));
  stopper.join();
  EXPECT_EQ(values.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace mpt
