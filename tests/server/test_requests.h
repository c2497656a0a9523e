// Requests the coordinator's tests build: tasks and pipelines with small,
// valid settings (paths need not exist: the coordinator never reads them).
#ifndef MPT_TESTS_SERVER_TEST_REQUESTS_H_
#define MPT_TESTS_SERVER_TEST_REQUESTS_H_

#include <string>
#include <vector>

#include "proto/mpt/v1/service.pb.h"

namespace mpt {
namespace testing {

inline mpt::v1::TaskData Task(const std::string& name) {
  mpt::v1::TaskData t;
  t.set_name(name);
  t.set_train_path("/data/" + name + ".jsonl");
  return t;
}

// A PIPELINE with the given source and target tasks (targets may be empty:
// no target stage).
inline mpt::v1::SubmitJobRequest PipelineRequest(const std::vector<std::string>& sources,
                                                 const std::vector<std::string>& targets = {"t1"},
                                                 int world_size = 1, int priority = 0,
                                                 const std::string& model = "/models/t5") {
  mpt::v1::SubmitJobRequest r;
  r.set_kind(mpt::v1::PIPELINE);
  r.set_priority(priority);
  mpt::v1::PipelineSpec* spec = r.mutable_spec();
  spec->set_base_model(model);
  for (const auto& s : sources) *spec->mutable_source()->add_tasks() = Task(s);
  spec->mutable_source()->mutable_train()->set_steps(10);
  spec->mutable_distillation()->mutable_train()->set_steps(10);
  spec->mutable_distillation()->set_world_size(world_size);
  if (!targets.empty()) {
    for (const auto& t : targets) *spec->mutable_target()->add_tasks() = Task(t);
    spec->mutable_target()->mutable_train()->set_steps(10);
  }
  return r;
}

}  // namespace testing
}  // namespace mpt

#endif  // MPT_TESTS_SERVER_TEST_REQUESTS_H_
