// libFuzzer target: a pipeline spec in protobuf's JSON mapping.
#include "common/spec/spec_loader.h"

static constexpr mpt::SpecFormat kSpecFuzzFormat = mpt::SpecFormat::kJson;
#include "tools/fuzz/spec_fuzzer.inc"
