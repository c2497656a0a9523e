#include "common/progress/progress.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace mpt {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Keeps every event; not thread-safe on its own (the fan-out serialises).
class RecordingSink : public ProgressSink {
 public:
  void OnEvent(const ProgressEvent& event) override { events.push_back(event); }
  std::vector<ProgressEvent> events;
};

ProgressEvent StepEvent(int64_t step, int64_t total, double elapsed) {
  ProgressEvent event;
  event.stage = "source";
  event.task = "sst2";
  event.kind = ProgressKind::kStep;
  event.step = step;
  event.total_steps = total;
  event.losses = {{"loss", 0.5}};
  event.elapsed_seconds = elapsed;
  return event;
}

ProgressEvent KindEvent(ProgressKind kind, int64_t step, int64_t total) {
  ProgressEvent event = StepEvent(step, total, 0);
  event.kind = kind;
  event.losses.clear();
  return event;
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

TEST(Progress, KindNames) {
  EXPECT_EQ(ProgressKindName(ProgressKind::kStarted), "STARTED");
  EXPECT_EQ(ProgressKindName(ProgressKind::kStep), "STEP");
  EXPECT_EQ(ProgressKindName(ProgressKind::kEval), "EVAL");
  EXPECT_EQ(ProgressKindName(ProgressKind::kCheckpoint), "CHECKPOINT");
  EXPECT_EQ(ProgressKindName(ProgressKind::kFinished), "FINISHED");
  EXPECT_EQ(ProgressKindName(ProgressKind::kFailed), "FAILED");
}

TEST(Progress, EstimateEtaSeconds) {
  EXPECT_DOUBLE_EQ(EstimateEtaSeconds(10, 5, 20), 30);  // 2 s a step, 15 left
  EXPECT_DOUBLE_EQ(EstimateEtaSeconds(10, 20, 20), 0);
  EXPECT_DOUBLE_EQ(EstimateEtaSeconds(10, 25, 20), 0);
  EXPECT_DOUBLE_EQ(EstimateEtaSeconds(10, 0, 20), -1);
  EXPECT_DOUBLE_EQ(EstimateEtaSeconds(10, 5, 0), -1);
  EXPECT_DOUBLE_EQ(EstimateEtaSeconds(-1, 5, 20), -1);
  EXPECT_DOUBLE_EQ(
      EstimateEtaSeconds(std::numeric_limits<double>::quiet_NaN(), 5, 20), -1);
}

TEST(Progress, EtaEstimatorLeavesOutWarmUp) {
  EtaEstimator eta;
  EXPECT_DOUBLE_EQ(eta.EtaSeconds(100), -1);
  eta.Observe(1, 100);  // the first step took 100 s (loading, warm-up)
  // One observation: the average over the whole elapsed time.
  EXPECT_DOUBLE_EQ(eta.EtaSeconds(11), 1000);
  eta.Observe(11, 110);  // then 1 s a step
  EXPECT_DOUBLE_EQ(eta.EtaSeconds(111), 100);
  EXPECT_DOUBLE_EQ(eta.EtaSeconds(11), 0);
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(42.4), "42s");
  EXPECT_EQ(FormatDuration(187), "3m07s");
  EXPECT_EQ(FormatDuration(7500), "2h05m");
  EXPECT_EQ(FormatDuration(3 * 86400 + 4 * 3600 + 59), "3d04h");
  EXPECT_EQ(FormatDuration(-1), "?");
  EXPECT_EQ(FormatDuration(std::numeric_limits<double>::infinity()), "?");
}

TEST(Progress, FormatProgressBar) {
  ProgressEvent event = StepEvent(450, 1000, 62);
  event.losses = {{"loss", 0.42311}, {"plm", 0.3}};
  event.tokens_per_second = 12345;
  event.eta_seconds = 83;
  EXPECT_EQ(FormatProgressBar(event, 10),
            "source/sst2 [====>     ]  450/1000  45% | loss 0.4231 | 12.3k "
            "tok/s | ETA 1m23s");
  ProgressEvent full = StepEvent(8, 8, 1);
  full.task = "";
  full.stage = "distillation";
  EXPECT_EQ(FormatProgressBar(full, 4),
            "distillation [====] 8/8 100% | loss 0.5");
  ProgressEvent unknown_total = StepEvent(3, 0, 1);
  unknown_total.losses.clear();
  EXPECT_EQ(FormatProgressBar(unknown_total, 10), "source/sst2 step 3");
}

TEST(Progress, FormatProgressLine) {
  ProgressEvent step = StepEvent(450, 1000, 62);
  step.losses = {{"loss", 1.25}, {"plm", 1}, {"kl", 0.125}, {"hidden", 0.125}};
  step.learning_rate = 0.3;
  step.tokens_per_second = 12345.4;
  step.eta_seconds = 83;
  EXPECT_EQ(FormatProgressLine(step),
            "[source/sst2] STEP 450/1000 (45.0%) loss=1.25 plm=1 kl=0.125 "
            "hidden=0.125 lr=3.00e-01 tok/s=12345 elapsed=1m02s eta=1m23s");

  ProgressEvent eval = KindEvent(ProgressKind::kEval, 500, 1000);
  eval.stage = "target";
  eval.task = "rte";
  eval.metrics = {{"rte/accuracy", 0.71119}};
  EXPECT_EQ(FormatProgressLine(eval),
            "[target/rte] EVAL 500/1000 (50.0%) rte/accuracy=0.7112");

  ProgressEvent failed = KindEvent(ProgressKind::kFailed, 3, 1000);
  failed.stage = "distillation";
  failed.task = "";
  failed.eta_seconds = 10;  // not shown for a stage that ended
  failed.message = "out of memory";
  EXPECT_EQ(FormatProgressLine(failed),
            "[distillation] FAILED 3/1000 (0.3%): out of memory");

  ProgressEvent started = KindEvent(ProgressKind::kStarted, 0, 0);
  EXPECT_EQ(FormatProgressLine(started), "[source/sst2] STARTED");
}

TEST(FanOutProgressSink, DeliversToEverySubscriberInOrder) {
  FanOutProgressSink fan_out;
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  fan_out.AddSubscriber(first);
  fan_out.AddSubscriber(nullptr);  // ignored
  fan_out.AddSubscriber(second);
  EXPECT_EQ(fan_out.num_subscribers(), 2u);
  fan_out.OnEvent(StepEvent(1, 10, 1));
  EXPECT_TRUE(fan_out.RemoveSubscriber(first.get()));
  EXPECT_FALSE(fan_out.RemoveSubscriber(first.get()));
  fan_out.OnEvent(StepEvent(2, 10, 2));
  ASSERT_EQ(first->events.size(), 1u);
  ASSERT_EQ(second->events.size(), 2u);
  EXPECT_EQ(second->events[1].step, 2);
}

TEST(FanOutProgressSink, SerialisesEventsFromManyThreads) {
  FanOutProgressSink fan_out;
  auto recorder = std::make_shared<RecordingSink>();
  fan_out.AddSubscriber(recorder);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&fan_out, t] {
      for (int i = 0; i < 500; ++i) fan_out.OnEvent(StepEvent(t * 1000 + i, 0, 0));
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(recorder->events.size(), 2000u);
}

TEST(TerminalProgressSink, PlainModeLogsEveryNthStepAndOtherEvents) {
  std::ostringstream out;
  TerminalProgressOptions options;
  options.log_every_steps = 10;
  {
    TerminalProgressSink sink(&out, /*live=*/false, options);
    EXPECT_FALSE(sink.live());
    sink.OnEvent(KindEvent(ProgressKind::kStarted, 0, 25));
    for (int step = 1; step <= 25; ++step) sink.OnEvent(StepEvent(step, 25, 0));
    ProgressEvent checkpoint = KindEvent(ProgressKind::kCheckpoint, 25, 25);
    checkpoint.message = "/ckpt";
    sink.OnEvent(checkpoint);
    sink.OnEvent(KindEvent(ProgressKind::kFinished, 25, 25));
  }
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n');
  EXPECT_THAT(lines,
              ElementsAre("[source/sst2] STARTED 0/25 (0.0%)",
                          "[source/sst2] STEP 1/25 (4.0%) loss=0.5",
                          "[source/sst2] STEP 10/25 (40.0%) loss=0.5",
                          "[source/sst2] STEP 20/25 (80.0%) loss=0.5",
                          "[source/sst2] STEP 25/25 (100.0%) loss=0.5",
                          "[source/sst2] CHECKPOINT 25/25 (100.0%): /ckpt",
                          "[source/sst2] FINISHED 25/25 (100.0%)", ""));
  EXPECT_EQ(out.str().find('\r'), std::string::npos);
}

TEST(TerminalProgressSink, LiveModeRedrawsOneLine) {
  std::ostringstream out;
  TerminalProgressOptions options;
  options.bar_width = 4;
  options.max_columns = 200;
  options.min_redraw_seconds = 1.0;
  {
    TerminalProgressSink sink(&out, /*live=*/true, options);
    EXPECT_TRUE(sink.live());
    sink.OnEvent(StepEvent(1, 4, 0.1));   // first: drawn
    sink.OnEvent(StepEvent(2, 4, 0.5));   // too soon: skipped
    sink.OnEvent(StepEvent(3, 4, 1.2));   // drawn
    ProgressEvent eval = KindEvent(ProgressKind::kEval, 3, 4);
    eval.metrics = {{"sst2/accuracy", 0.5}};
    sink.OnEvent(eval);                   // line above, bar again
    sink.OnEvent(StepEvent(4, 4, 1.3));   // last: always drawn
    sink.OnEvent(KindEvent(ProgressKind::kFinished, 4, 4));
  }
  const std::string bar1 = "source/sst2 [=>  ] 1/4  25% | loss 0.5";
  const std::string bar3 = "source/sst2 [===>] 3/4  75% | loss 0.5";
  const std::string bar4 = "source/sst2 [====] 4/4 100% | loss 0.5";
  EXPECT_EQ(out.str(),
            absl::StrCat("\r", bar1, "\033[K",                            //
                         "\r", bar3, "\033[K",                            //
                         "\r\033[K[source/sst2] EVAL 3/4 (75.0%) "
                         "sst2/accuracy=0.5000\n",
                         bar3,                                            //
                         "\r", bar4, "\033[K",                            //
                         "\r\033[K[source/sst2] FINISHED 4/4 (100.0%)\n"));
}

TEST(TerminalProgressSink, LiveModeCutsToWidthAndEndsOpenBar) {
  std::ostringstream out;
  TerminalProgressOptions options;
  options.max_columns = 20;
  {
    TerminalProgressSink sink(&out, /*live=*/true, options);
    sink.OnEvent(StepEvent(1, 100, 0));
  }
  // 19 characters so that the line never wraps, and a newline at the end
  // because the sink went away with the bar on screen.
  EXPECT_EQ(out.str(), "\rsource/sst2 [>     \033[K\n");
}

TEST(ProgressEventToJson, HasEveryKeyInOrder) {
  ProgressEvent event = StepEvent(450, 1000, 62);
  event.losses = {{"loss", 1.5}, {"plm", 1.0}, {"kl", 0.5}};
  event.learning_rate = 0.25;
  event.tokens_per_second = 100;
  event.metrics = {{"sst2/accuracy", 0.75}};
  event.eta_seconds = 83;
  event.message = "hi \"there\"";
  std::string text = ProgressEventToJson(event);
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_THAT(text, HasSubstr("\"losses\":{\"loss\":1.5,\"plm\":1.0,\"kl\":0.5}"));
  nlohmann::json json = nlohmann::json::parse(text);
  EXPECT_EQ(json["stage"], "source");
  EXPECT_EQ(json["task"], "sst2");
  EXPECT_EQ(json["kind"], "STEP");
  EXPECT_EQ(json["step"], 450);
  EXPECT_EQ(json["total_steps"], 1000);
  EXPECT_DOUBLE_EQ(json["learning_rate"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(json["tokens_per_second"].get<double>(), 100);
  EXPECT_DOUBLE_EQ(json["metrics"]["sst2/accuracy"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(json["elapsed_seconds"].get<double>(), 62);
  EXPECT_DOUBLE_EQ(json["eta_seconds"].get<double>(), 83);
  EXPECT_EQ(json["message"], "hi \"there\"");
}

TEST(ProgressEventToJson, UnknownAndNonFiniteValuesAreNull) {
  ProgressEvent event = KindEvent(ProgressKind::kFailed, 3, 10);
  event.losses = {{"loss", std::nan("")}};
  event.task = "bad\xFF";
  nlohmann::json json = nlohmann::json::parse(ProgressEventToJson(event));
  EXPECT_TRUE(json["eta_seconds"].is_null());
  EXPECT_TRUE(json["losses"]["loss"].is_null());
  EXPECT_EQ(json["task"], "bad\xEF\xBF\xBD");  // U+FFFD
  EXPECT_TRUE(json["metrics"].is_object());
  EXPECT_TRUE(json["losses"].is_object());
}

TEST(JsonLinesProgressSink, OneObjectPerLine) {
  std::ostringstream out;
  JsonLinesProgressSink sink(&out);
  sink.OnEvent(KindEvent(ProgressKind::kStarted, 0, 10));
  sink.OnEvent(StepEvent(1, 10, 1));
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n');
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2], "");
  EXPECT_EQ(nlohmann::json::parse(lines[0])["kind"], "STARTED");
  EXPECT_EQ(nlohmann::json::parse(lines[1])["step"], 1);
}

TEST(JsonLinesProgressSink, OpenFileAppends) {
  std::string path = TempPath("progress.jsonl");
  std::remove(path.c_str());
  for (int round = 0; round < 2; ++round) {
    absl::StatusOr<std::unique_ptr<JsonLinesProgressSink>> sink =
        JsonLinesProgressSink::OpenFile(path);
    ASSERT_TRUE(sink.ok()) << sink.status();
    (*sink)->OnEvent(StepEvent(round + 1, 2, 1));
  }
  std::ifstream in(path);
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(in, line)) {
    steps.push_back(nlohmann::json::parse(line)["step"].get<int64_t>());
  }
  EXPECT_THAT(steps, ElementsAre(1, 2));
}

TEST(JsonLinesProgressSink, OpenFileInMissingFolderFails) {
  std::string path = TempPath("no/such/folder/progress.jsonl");
  absl::StatusOr<std::unique_ptr<JsonLinesProgressSink>> sink =
      JsonLinesProgressSink::OpenFile(path);
  EXPECT_EQ(sink.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(sink.status().message()), HasSubstr(path));
}

}  // namespace
}  // namespace mpt
