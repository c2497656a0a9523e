#include "common/spec/spec_paths.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(SpecPaths, ListsEveryPathFieldInOrder) {
  mpt::v1::PipelineSpec spec;
  spec.set_base_model("/m");
  auto* s = spec.mutable_source()->add_tasks();
  s->set_train_path("/d/a.train");
  s->set_eval_path("/d/a.eval");
  spec.mutable_source()->add_init_adapters("/ad/0");
  spec.mutable_distillation()->add_teacher_adapters("/t/0");
  spec.mutable_target()->add_tasks()->set_train_path("/d/t.train");
  spec.mutable_target()->set_source_adapter("/src");
  std::vector<std::string> fields;
  for (const SpecPath& p : SpecInputPaths(spec)) fields.push_back(p.field + "=" + p.path);
  EXPECT_THAT(fields, ::testing::ElementsAre(
                          "base_model=/m", "source.tasks[0].train_path=/d/a.train",
                          "source.tasks[0].eval_path=/d/a.eval", "target.tasks[0].train_path=/d/t.train",
                          "source.init_adapters[0]=/ad/0", "distillation.teacher_adapters[0]=/t/0",
                          "target.source_adapter=/src"));
}

TEST(SpecPaths, ServiceFilePathsLeaveOutWhatArtefactsFill) {
  mpt::v1::PipelineSpec spec;
  spec.set_base_model("/m");
  spec.mutable_source()->add_init_adapters("/ad/0");
  spec.mutable_distillation()->add_teacher_adapters("jobs/j/artifacts/t");
  spec.mutable_target()->add_teacher_adapters("/t/0");
  spec.mutable_target()->set_source_adapter("jobs/j/artifacts/d");
  std::vector<std::string> fields;
  for (const SpecPath& p : ServiceFilePaths(spec, "spec.")) fields.push_back(p.field);
  EXPECT_THAT(fields, ::testing::ElementsAre("spec.base_model", "spec.source.init_adapters[0]",
                                             "spec.target.teacher_adapters[0]"));
}

TEST(SpecPaths, ParsesDataRoots) {
  EXPECT_TRUE(ParseDataRoots("", "--data_roots")->empty());
  EXPECT_EQ(*ParseDataRoots("/a, /b/", "--data_roots"), (std::vector<std::string>{"/a", "/b/"}));
  for (const char* bad : {"data", "/a,,/b", "/a,rel"}) {
    absl::StatusOr<std::vector<std::string>> roots = ParseDataRoots(bad, "--data_roots");
    ASSERT_FALSE(roots.ok()) << bad;
    EXPECT_THAT(std::string(roots.status().message()), HasSubstr("--data_roots: "));
  }
}

TEST(SpecPaths, ConfinesPathsToRootsAfterResolvingDotsAndLinks) {
  const fs::path dir = fs::path(std::getenv("TEST_TMPDIR")) / "roots";
  fs::create_directories(dir / "data" / "sub");
  fs::create_directories(dir / "data2");
  std::ofstream(dir / "data" / "sub" / "a.jsonl") << "{}";
  std::ofstream(dir / "secret") << "x";
  std::error_code ec;
  fs::create_symlink(dir / "secret", dir / "data" / "link.jsonl", ec);
  const std::vector<std::string> roots = {(dir / "data").string() + "/"};
  auto check = [&](const std::string& path) {
    return CheckPathsWithinRoots({{"source.tasks[0].train_path", path}}, roots, "worker",
                                 "--data_roots");
  };
  EXPECT_TRUE(check((dir / "data" / "sub" / "a.jsonl").string()).ok());
  EXPECT_TRUE(check((dir / "data" / "sub" / "not_yet.jsonl").string()).ok());
  EXPECT_TRUE(check((dir / "data").string()).ok());
  for (const fs::path& outside :
       {dir / "secret", dir / "data" / ".." / "secret", dir / "data" / "link.jsonl",
        dir / "data2" / "x.jsonl", fs::path("/etc/passwd")}) {
    absl::Status s = check(outside.string());
    ASSERT_FALSE(s.ok()) << outside;
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("source.tasks[0].train_path: \"" + outside.string().substr(0, 64)));
    EXPECT_THAT(std::string(s.message()), HasSubstr("is outside the folders this worker reads"));
  }
  EXPECT_TRUE(CheckPathsWithinRoots({{"base_model", "/anything"}}, {}, "worker", "x").ok());
}

}  // namespace
}  // namespace mpt
