// libFuzzer target: a pipeline spec in protobuf text format.
#include "common/spec/spec_loader.h"

static constexpr mpt::SpecFormat kSpecFuzzFormat = mpt::SpecFormat::kText;
#include "tools/fuzz/spec_fuzzer.inc"
