// The worker's per-assignment log: numbering, the bound (oldest dropped,
// counted), acknowledgement, batches, capture of MPT_LOG lines, progress as
// lines, and text made safe for the wire.
#include "worker/daemon/stage_log.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

std::vector<std::string> Texts(const std::vector<mpt::v1::LogLine>& lines) {
  std::vector<std::string> out;
  for (const auto& l : lines) out.push_back(l.text());
  return out;
}

TEST(StageLogTest, LinesAreNumberedAndKeptUntilAcknowledged) {
  StageLog log;
  log.Add("INFO", 1700000000123456, "one");
  log.Add("WARNING", 1700000001000000, "two");
  log.Add("ERROR", 1700000002000000, "three");
  std::vector<mpt::v1::LogLine> batch = log.Pending(2, 1 << 20);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].sequence(), 1);
  EXPECT_EQ(batch[0].time().seconds(), 1700000000);
  EXPECT_EQ(batch[0].time().nanos(), 123456000);
  EXPECT_EQ(batch[1].severity(), "WARNING");
  // Not acknowledged: the same batch again.
  EXPECT_EQ(Texts(log.Pending(2, 1 << 20)), Texts(batch));
  log.Acknowledge(2);
  std::vector<mpt::v1::LogLine> rest = log.Pending(10, 1 << 20);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].sequence(), 3);
  log.Acknowledge(3);
  EXPECT_FALSE(log.HasPending());
  EXPECT_EQ(log.last_sequence(), 3);
  EXPECT_EQ(log.dropped(), 0);
}

TEST(StageLogTest, TheOldestUnsentLinesAreDroppedBeyondTheBound) {
  StageLogOptions options;
  options.max_lines = 3;
  StageLog log(options);
  for (int i = 1; i <= 8; ++i) log.Add("INFO", 0, absl::StrCat("l", i));
  std::vector<mpt::v1::LogLine> kept = log.Pending(100, 1 << 20);
  EXPECT_EQ(Texts(kept), (std::vector<std::string>{"l6", "l7", "l8"}));
  // The numbers keep their gap: the coordinator sees that 5 were dropped.
  EXPECT_EQ(kept[0].sequence(), 6);
  EXPECT_EQ(log.dropped(), 5);
}

TEST(StageLogTest, TheByteBoundDropsOldestToo) {
  StageLogOptions options;
  options.max_bytes = 25;
  StageLog log(options);
  for (int i = 0; i < 4; ++i) log.Add("INFO", 0, std::string(10, 'a' + i));
  EXPECT_EQ(Texts(log.Pending(100, 1 << 20)),
            (std::vector<std::string>{std::string(10, 'c'), std::string(10, 'd')}));
  EXPECT_EQ(log.dropped(), 2);
}

TEST(StageLogTest, ABatchStopsAtItsByteBoundButTakesAtLeastOneLine) {
  StageLog log;
  log.Add("INFO", 0, std::string(100, 'x'));
  log.Add("INFO", 0, std::string(100, 'y'));
  EXPECT_EQ(log.Pending(10, 50).size(), 1u);
  EXPECT_EQ(log.Pending(10, 200).size(), 2u);
}

TEST(StageLogTest, AttachedItReceivesLogLinesOfEveryThreadUntilDetached) {
  StageLog log;
  MPT_LOG(INFO) << "before attach";
  log.Attach();
  MPT_LOG(WARNING) << "from the main thread";
  std::thread t([] { MPT_LOG(ERROR) << "from another thread"; });
  t.join();
  log.Detach();
  MPT_LOG(INFO) << "after detach";
  std::vector<mpt::v1::LogLine> lines = log.Pending(100, 1 << 20);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].severity(), "WARNING");
  EXPECT_NE(lines[0].text().find("stage_log_test.cc:"), std::string::npos) << lines[0].text();
  EXPECT_NE(lines[0].text().find("] from the main thread"), std::string::npos);
  EXPECT_EQ(lines[1].severity(), "ERROR");
  EXPECT_GT(lines[1].time().seconds(), 1600000000);
}

TEST(StageLogTest, ProgressBecomesLinesThinnedOutForSteps) {
  StageLogOptions options;
  options.log_every_steps = 5;
  StageLog log(options);
  ProgressEvent e;
  e.stage = "source";
  e.task = "sst2";
  e.kind = ProgressKind::kStarted;
  log.AddProgress(e);
  e.kind = ProgressKind::kStep;
  e.total_steps = 12;
  for (int step = 1; step <= 12; ++step) {
    e.step = step;
    e.losses = {{"loss", 1.0 / step}};
    log.AddProgress(e);
  }
  e.kind = ProgressKind::kFailed;
  e.message = "out of memory";
  log.AddProgress(e);
  std::vector<mpt::v1::LogLine> lines = log.Pending(100, 1 << 20);
  // STARTED, steps 1, 5, 10, 12, FAILED.
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines[0].text().rfind("STARTED", 0), 0u) << lines[0].text();
  EXPECT_EQ(lines[2].text().rfind("STEP 5/12 ", 0), 0u) << lines[2].text();
  EXPECT_NE(lines[4].text().find("STEP 12/12"), std::string::npos);
  EXPECT_EQ(lines[5].severity(), "ERROR");
  EXPECT_NE(lines[5].text().find("out of memory"), std::string::npos);
}

TEST(StageLogTest, TextIsMadeValidUtf8AndCut) {
  EXPECT_EQ(SanitizeLogText("ok \xC3\xA9", 100), "ok \xC3\xA9");
  EXPECT_EQ(SanitizeLogText("bad \xFF byte", 100), "bad \xEF\xBF\xBD byte");
  EXPECT_EQ(SanitizeLogText("truncated \xE2\x82", 100), "truncated \xEF\xBF\xBD\xEF\xBF\xBD");
  // Cut on a character boundary: the two-byte e-acute is not split.
  const std::string cut = SanitizeLogText(std::string(15, 'a') + "\xC3\xA9" + "bcd", 16);
  EXPECT_EQ(cut, std::string(15, 'a') + " [cut]");
  StageLog log;
  log.Add("INFO", 0, std::string(5000, 'z'));
  EXPECT_EQ(log.Pending(1, 1 << 20)[0].text().size(), 2048u + 6);
}

}  // namespace
}  // namespace mpt
