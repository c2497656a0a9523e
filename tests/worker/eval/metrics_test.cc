#include "worker/eval/metrics.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace mpt {
namespace {

using ::testing::HasSubstr;
using Strings = std::vector<std::string>;

TEST(NormalizeAnswer, TrimsCollapsesAndLowercases) {
  EXPECT_EQ(NormalizeAnswer("  Hello\t\n World  "), "hello world");
  EXPECT_EQ(NormalizeAnswer("A  B\r\nC"), "a b c");
  EXPECT_EQ(NormalizeAnswer(""), "");
  EXPECT_EQ(NormalizeAnswer(" \t\n "), "");
  EXPECT_EQ(NormalizeAnswer("not_entailment"), "not_entailment");
  // Bytes outside ASCII are kept: "É" stays upper case.
  EXPECT_EQ(NormalizeAnswer("\xC3\x89T\xC3\x89"), "\xC3\x89t\xC3\x89");
}

TEST(Metrics, AccuracyIsByteExact) {
  EXPECT_DOUBLE_EQ(*Accuracy({"a", "b", "c", "d"}, {"a", "x", "c", "y"}), 0.5);
  EXPECT_DOUBLE_EQ(*Accuracy({"Yes"}, {"yes"}), 0.0);
  EXPECT_DOUBLE_EQ(*Accuracy({"yes"}, {"yes"}), 1.0);
}

TEST(Metrics, ExactMatchNormalises) {
  Strings predictions = {"Positive ", "neg ative", "x"};
  Strings references = {"positive", "neg  ative", "y"};
  EXPECT_NEAR(*ExactMatch(predictions, references), 2.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(*Accuracy(predictions, references), 0.0);
}

TEST(Metrics, MacroF1ByHand) {
  // Labels {a, b, c}:
  //   a: TP 1, FP 1, FN 0 -> F1 2/3
  //   b: TP 1, FP 0, FN 2 -> F1 1/2
  //   c: TP 0, FP 1, FN 0 -> F1 0 (predicted, never a reference)
  Strings predictions = {"a", "a", "b", "c"};
  Strings references = {"a", "b", "b", "b"};
  EXPECT_NEAR(*MacroF1(predictions, references), (2.0 / 3 + 0.5 + 0) / 3, 1e-12);
  EXPECT_DOUBLE_EQ(*Accuracy(predictions, references), 0.5);
}

TEST(Metrics, MacroF1PerfectAndNormalised) {
  EXPECT_DOUBLE_EQ(*MacroF1({"x", "y", "x"}, {"x", "y", "x"}), 1.0);
  // "Yes" and "yes " are one label after normalisation.
  EXPECT_DOUBLE_EQ(*MacroF1({"Yes", "no"}, {"yes ", "No"}), 1.0);
  // A single class always wrong: labels {p, q}, both F1 0.
  EXPECT_DOUBLE_EQ(*MacroF1({"p"}, {"q"}), 0.0);
}

TEST(Metrics, MacroF1Binary) {
  // pos: TP 2, FP 1, FN 1 -> 4/6; neg: TP 1, FP 1, FN 1 -> 2/4.
  Strings predictions = {"pos", "pos", "pos", "neg", "neg"};
  Strings references = {"pos", "pos", "neg", "pos", "neg"};
  EXPECT_NEAR(*MacroF1(predictions, references), (4.0 / 6 + 0.5) / 2, 1e-12);
}

TEST(Metrics, RejectsMismatchedOrEmptyInputs) {
  absl::StatusOr<double> result = Accuracy({"a"}, {"a", "b"});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("1 predictions but 2 references"));
  EXPECT_EQ(ExactMatch({}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MacroF1({}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MacroF1({"a", "b"}, {"a"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsReport, AddTaskComputesAllThree) {
  MetricsReport report("source", 100);
  ASSERT_TRUE(report.AddTask("sst2", {"positive", "Negative", "positive"},
                             {"positive", "negative", "negative"})
                  .ok());
  const TaskMetrics* sst2 = report.Find("sst2");
  ASSERT_NE(sst2, nullptr);
  EXPECT_EQ(sst2->num_examples, 3);
  EXPECT_NEAR(*sst2->Get(kAccuracy), 1.0 / 3, 1e-12);
  EXPECT_NEAR(*sst2->Get(kExactMatch), 2.0 / 3, 1e-12);
  // positive: TP 1, FP 1, FN 0 -> 2/3; negative: TP 1, FP 0, FN 1 -> 2/3.
  EXPECT_NEAR(*sst2->Get(kMacroF1), 2.0 / 3, 1e-12);
  EXPECT_FALSE(sst2->Get("bleu").has_value());
  EXPECT_EQ(report.Find("qnli"), nullptr);
}

TEST(MetricsReport, RejectsDuplicateAndBadTasksUnchanged) {
  MetricsReport report("target", 5);
  ASSERT_TRUE(report.AddTask("rte", {"a"}, {"a"}).ok());
  absl::Status status = report.AddTask("rte", {"a"}, {"a"});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("\"rte\" is already"));
  status = report.AddTask("cb", {"a"}, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("task \"cb\": 1 predictions but 0 references"));
  EXPECT_EQ(report.tasks().size(), 1u);
}

TEST(MetricsReport, AverageFlattenAndSet) {
  MetricsReport report("target", 1000);
  ASSERT_TRUE(report.AddTask("rte", {"a", "b"}, {"a", "a"}).ok());  // acc .5
  ASSERT_TRUE(report.AddTask("cb", {"x"}, {"x"}).ok());             // acc 1
  report.Set("cb", "f1_custom", 0.25, 1);
  report.Set("cb", kAccuracy, 0.75);  // replaces
  EXPECT_DOUBLE_EQ(*report.Average(kAccuracy), (0.5 + 0.75) / 2);
  EXPECT_DOUBLE_EQ(*report.Average("f1_custom"), 0.25);  // only cb has it
  EXPECT_FALSE(report.Average("bleu").has_value());

  report.Set("wsc", kAccuracy, 0.5, 10);  // a new task
  ASSERT_NE(report.Find("wsc"), nullptr);
  EXPECT_EQ(report.Find("wsc")->num_examples, 10);

  std::vector<std::pair<std::string, double>> flat = report.Flatten();
  ASSERT_EQ(flat.size(), 3u + 4u + 1u + 4u);
  EXPECT_EQ(flat[0].first, "rte/accuracy");
  EXPECT_DOUBLE_EQ(flat[0].second, 0.5);
  EXPECT_EQ(flat[3].first, "cb/accuracy");
  EXPECT_DOUBLE_EQ(flat[3].second, 0.75);
  EXPECT_EQ(flat[6].first, "cb/f1_custom");
  EXPECT_EQ(flat[7].first, "wsc/accuracy");
  EXPECT_EQ(flat[8].first, "average/accuracy");
  EXPECT_DOUBLE_EQ(flat[8].second, (0.5 + 0.75 + 0.5) / 3);
  EXPECT_EQ(flat[9].first, "average/exact_match");
  EXPECT_EQ(flat[11].first, "average/f1_custom");
}

TEST(MetricsReport, ToStringTable) {
  MetricsReport report("target", 1000);
  ASSERT_TRUE(report.AddTask("rte", {"a", "b", "a", "a"}, {"a", "a", "a", "a"}).ok());
  ASSERT_TRUE(report.AddTask("cb", {"x", "y"}, {"x", "y"}).ok());
  // rte: accuracy 3/4; labels a (TP 3, FN 1 -> 6/7), b (FP 1 -> 0).
  EXPECT_EQ(report.ToString(),
            "target evaluation at step 1000\n"
            "task     examples  accuracy  exact_match  macro_f1\n"
            "rte             4     75.00        75.00     42.86\n"
            "cb              2    100.00       100.00    100.00\n"
            "average         6     87.50        87.50     71.43\n");

  MetricsReport single("source", 7);
  ASSERT_TRUE(single.AddTask("sst2", {"a"}, {"a"}).ok());
  EXPECT_EQ(single.ToString(),
            "source evaluation at step 7\n"
            "task  examples  accuracy  exact_match  macro_f1\n"
            "sst2         1    100.00       100.00    100.00\n");
}

TEST(MetricsReport, ToJson) {
  MetricsReport report("distillation", 50);
  ASSERT_TRUE(report.AddTask("sst2", {"a", "b"}, {"a", "a"}).ok());
  nlohmann::json json = nlohmann::json::parse(report.ToJson());
  EXPECT_EQ(json["stage"], "distillation");
  EXPECT_EQ(json["step"], 50);
  ASSERT_EQ(json["tasks"].size(), 1u);
  EXPECT_EQ(json["tasks"][0]["task"], "sst2");
  EXPECT_EQ(json["tasks"][0]["num_examples"], 2);
  EXPECT_DOUBLE_EQ(json["tasks"][0]["metrics"]["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(json["average"]["accuracy"].get<double>(), 0.5);

  MetricsReport empty("source", 0);
  nlohmann::json empty_json = nlohmann::json::parse(empty.ToJson());
  EXPECT_TRUE(empty_json["tasks"].empty());
  EXPECT_TRUE(empty_json["average"].is_object());
}

}  // namespace
}  // namespace mpt
