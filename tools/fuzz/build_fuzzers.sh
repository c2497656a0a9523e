#!/usr/bin/env bash
# Builds the libFuzzer targets of tools/fuzz with clang (ASan + UBSan),
# straight from the torch-free sources they need; Bazel stays configured for
# gcc. Usage: tools/fuzz/build_fuzzers.sh [OUT]  (default out/fuzz).
# Prints the folder of the binaries on its last line. Needs the packages
# clang-14, libfuzzer-14-dev and libclang-rt-14-dev (tools/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/fuzz}
CXX=${CXX_FUZZ:-clang++-14}
mkdir -p "$OUT/gen" "$OUT/obj" "$OUT/bin"

# Each target is tools/fuzz/<name>.cc, linked with the library code below.
TARGETS=(
  safetensors_fuzzer jsonl_fuzzer spec_text_fuzzer spec_json_fuzzer
  adapter_config_fuzzer checkpoint_state_fuzzer t5_config_fuzzer t5_tokenizer_fuzzer
  hf_tokenizer_fuzzer llama_config_fuzzer artifact_fuzzer proto_wire_fuzzer
)
LIB_SRCS=(
  common/json_util.cc common/file_util.cc common/quote.cc common/safetensors.cc
  common/spec/spec_loader.cc
  worker/data/jsonl_dataset.cc
  worker/prompts/adapter_config.cc
  worker/training/checkpoint_state.cc
  worker/model/config_fields.cc worker/model/llama_config.cc worker/model/t5_config.cc worker/model/t5_tokenizer.cc worker/model/grapheme_clusters.cc
  worker/model/hf_tokenizer.cc
  common/artifact_pack.cc server/adapter_validation.cc server/proto_wire.cc
)

# The generated proto code, where Bazel's genrule puts it (proto/mpt/v1/...).
protoc --cpp_out="$OUT/gen" -I. proto/mpt/v1/spec.proto proto/mpt/v1/service.proto
PROTO_SRCS=("$OUT/gen/proto/mpt/v1/spec.pb.cc" "$OUT/gen/proto/mpt/v1/service.pb.cc")

PKGS="protobuf absl_status absl_statusor absl_strings absl_str_format absl_synchronization
      absl_time absl_hash absl_raw_hash_set libpcre2-8"
# shellcheck disable=SC2086
CFLAGS_PKG=$(pkg-config --cflags $PKGS)
# shellcheck disable=SC2086
LIBS=$(pkg-config --libs $PKGS)
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CXXFLAGS="-std=c++17 -O1 -g $SAN -I. -I$OUT/gen $CFLAGS_PKG -DNDEBUG"

compile() {  # src obj extra-flags
  local src=$1 obj=$2
  shift 2
  if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ]; then
    # shellcheck disable=SC2086
    $CXX $CXXFLAGS "$@" -c "$src" -o "$obj"
  fi
}
export -f compile
export CXX CXXFLAGS

jobs=()
for src in "${LIB_SRCS[@]}" "${PROTO_SRCS[@]}"; do
  obj="$OUT/obj/$(echo "$src" | tr '/' '_').o"
  jobs+=("$src $obj -fsanitize=fuzzer-no-link")
done
for t in "${TARGETS[@]}"; do
  jobs+=("tools/fuzz/$t.cc $OUT/obj/$t.o -fsanitize=fuzzer-no-link")
done
# Headers changed: rebuild everything (cheap enough; a few seconds per file).
newest_header=$(find common server worker tools/fuzz -name '*.h' -o -name '*.inc' | xargs ls -t | head -1)
if [ -e "$OUT/obj/.stamp" ] && [ "$newest_header" -nt "$OUT/obj/.stamp" ]; then
  rm -f "$OUT"/obj/*.o
fi
printf '%s\n' "${jobs[@]}" | xargs -P "${FUZZ_BUILD_JOBS:-2}" -L1 bash -c 'compile "$@"' _
touch "$OUT/obj/.stamp"

ar rcs "$OUT/obj/libmpt_fuzz.a" $(for src in "${LIB_SRCS[@]}" "${PROTO_SRCS[@]}"; do
  echo "$OUT/obj/$(echo "$src" | tr '/' '_').o"; done)
for t in "${TARGETS[@]}"; do
  # shellcheck disable=SC2086
  $CXX $SAN -fsanitize=fuzzer "$OUT/obj/$t.o" "$OUT/obj/libmpt_fuzz.a" $LIBS -lpthread \
    -o "$OUT/bin/$t"
done
echo "$OUT/bin"
