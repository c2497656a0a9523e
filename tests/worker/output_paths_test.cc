#include "worker/output_paths.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

class OutputPathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTempDir("output_paths");
    std::filesystem::create_directories(dir_ + "/model");
    testing::WriteFile(dir_ + "/model/model.safetensors", "weights");
    testing::WriteFile(dir_ + "/spec.textproto", "spec");
  }
  std::vector<InputPath> Inputs() const {
    return {{"--spec", dir_ + "/spec.textproto"}, {"--model", dir_ + "/model"}};
  }
  std::string dir_;
};

TEST_F(OutputPathsTest, AFreshOrUnrelatedOutputIsFine) {
  EXPECT_TRUE(CheckOutputIsNotAnInput(dir_ + "/new.safetensors", "--out", Inputs()).ok());
  testing::WriteFile(dir_ + "/old.jsonl", "x");
  EXPECT_TRUE(CheckOutputIsNotAnInput(dir_ + "/old.jsonl", "--out", Inputs()).ok());
  EXPECT_TRUE(CheckOutputIsNotAnInput("", "--out", Inputs()).ok());
}

TEST_F(OutputPathsTest, RefusesAnInputFile) {
  const absl::Status s = CheckOutputIsNotAnInput(dir_ + "/spec.textproto", "--events", Inputs());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--events: "), std::string::npos) << s;
  EXPECT_NE(s.message().find("an input (--spec)"), std::string::npos) << s;
}

// A file inside an input folder, under another spelling and through links.
TEST_F(OutputPathsTest, RefusesAFileOfAnInputFolderHoweverSpelt) {
  for (const std::string& out : {dir_ + "/model/model.safetensors",
                                 dir_ + "/model/../model/./model.safetensors"}) {
    const absl::Status s = CheckOutputIsNotAnInput(out, "--out", Inputs());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << out;
    EXPECT_NE(s.message().find("an input (--model)"), std::string::npos) << s;
  }
  ASSERT_EQ(symlink((dir_ + "/model/model.safetensors").c_str(), (dir_ + "/link").c_str()), 0);
  ASSERT_EQ(link((dir_ + "/model/model.safetensors").c_str(), (dir_ + "/hard").c_str()), 0);
  for (const std::string& out : {dir_ + "/link", dir_ + "/hard"}) {
    const absl::Status s = CheckOutputIsNotAnInput(out, "--out", Inputs());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << out;
    EXPECT_NE(s.message().find("model.safetensors, an input (--model)"), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace mpt
