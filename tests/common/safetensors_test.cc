#include "common/safetensors.h"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

// A fresh folder per test so that leftover temporary files can be counted.
std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = absl::StrCat(TempDir(), "/", info->test_suite_name(), ".", info->name());
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

using ::mpt::testing::DataPath;

using ::mpt::testing::ReadFile;
using ::mpt::testing::WriteFile;

std::string LengthPrefix(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file with the given header text and data section, nothing validated.
std::string RawFile(const std::string& header, const std::string& data) {
  return LengthPrefix(header.size()) + header + data;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

template <typename T>
absl::Span<const uint8_t> AsBytes(const std::vector<T>& v) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()),
                                   v.size() * sizeof(T));
}

template <typename T>
std::vector<T> FromBytes(absl::Span<const uint8_t> bytes) {
  std::vector<T> v(bytes.size() / sizeof(T));
  if (!bytes.empty()) std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

// Opens a file with the given content and expects INVALID_ARGUMENT whose
// message starts with the path and contains every one of `parts`.
void ExpectInvalid(const std::string& name, const std::string& content,
                   const std::vector<std::string>& parts) {
  std::string path = absl::StrCat(TestDir(), "/", name);
  WriteFile(path, content);
  auto reader = SafetensorsReader::Open(path);
  ASSERT_FALSE(reader.ok()) << name;
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kInvalidArgument) << reader.status();
  EXPECT_THAT(std::string(reader.status().message()), StartsWith(path + ": "));
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(reader.status().message()), HasSubstr(part));
  }
}

TEST(DType, NamesSizesAndParsing) {
  const std::vector<std::tuple<DType, std::string, size_t>> expected = {
      {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
      {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
      {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1}, {DType::kU8, "U8", 1},
      {DType::kBool, "BOOL", 1}};
  for (const auto& [dtype, name, size] : expected) {
    EXPECT_EQ(DTypeName(dtype), name);
    EXPECT_EQ(DTypeSize(dtype), size);
    auto parsed = ParseDType(name);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, dtype);
  }
  EXPECT_EQ(ParseDType("f32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDType("U64").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({2, 3, 4}), 24);
  EXPECT_EQ(NumElements({5, 0}), 0);
}

TEST(Safetensors, RoundTripsEveryDTypeScalarsEmptyTensorsAndMetadata) {
  const std::string path = TestDir() + "/all.safetensors";
  std::vector<double> f64 = {1.5, -2.25, 1e300};
  std::vector<float> f32 = {0.f, 1.f, -1.f, 3.5f, 1e-30f, 7.f};
  std::vector<uint16_t> f16 = {0x3c00, 0xc000};       // 1.0, -2.0
  std::vector<uint16_t> bf16 = {0x3f80, 0x4049, 0x0}; // 1.0, 3.14, 0
  std::vector<int64_t> i64 = {-(int64_t{1} << 62), 42};
  std::vector<int32_t> i32 = {-7};
  std::vector<int16_t> i16 = {-32768, 32767, 0, 1};
  std::vector<int8_t> i8 = {-128, 127};
  std::vector<uint8_t> u8 = {0, 255, 17};
  std::vector<uint8_t> boolean = {1, 0, 0, 1};
  std::vector<float> empty;

  std::vector<TensorToWrite> tensors = {
      {"a/f64", DType::kF64, {3}, AsBytes(f64)},
      {"b.f32", DType::kF32, {2, 3}, AsBytes(f32)},
      {"f16", DType::kF16, {1, 2}, AsBytes(f16)},
      {"bf16", DType::kBF16, {3, 1}, AsBytes(bf16)},
      {"i64", DType::kI64, {2}, AsBytes(i64)},
      {"scalar_i32", DType::kI32, {}, AsBytes(i32)},
      {"empty_before", DType::kF32, {0, 4}, AsBytes(empty)},
      {"i16", DType::kI16, {2, 2}, AsBytes(i16)},
      {"i8", DType::kI8, {2}, AsBytes(i8)},
      {"u8", DType::kU8, {3}, AsBytes(u8)},
      {"bool", DType::kBool, {2, 2}, AsBytes(boolean)},
      {"empty_last", DType::kI64, {3, 0}, AsBytes(empty)},
  };
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "1200"},
                                                  {"unicode", "h\xc3\xa9llo \"q\""}};
  ASSERT_TRUE(WriteSafetensors(path, tensors, metadata).ok());

  const std::string bytes = ReadFile(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(header_size % 8, 0u) << "the data section must start 8-byte aligned";
  EXPECT_EQ(bytes.substr(8, 16), "{\"__metadata__\":");

  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->path(), path);
  EXPECT_EQ((*reader)->metadata(), metadata);
  ASSERT_EQ((*reader)->tensors().size(), tensors.size());
  // Laid out in the order given, so ascending offsets give back that order
  // (ties among zero-size tensors aside, which sort by name).
  uint64_t previous_end = 0;
  for (const TensorInfo& info : (*reader)->tensors()) {
    EXPECT_EQ(info.begin, previous_end) << info.name;
    previous_end = info.end;
  }
  for (const TensorToWrite& t : tensors) {
    const TensorInfo* info = (*reader)->Find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->name, t.name);
    EXPECT_EQ(info->dtype, t.dtype) << t.name;
    EXPECT_EQ(info->shape, t.shape) << t.name;
    absl::Span<const uint8_t> data = (*reader)->Data(*info);
    EXPECT_EQ(std::vector<uint8_t>(data.begin(), data.end()),
              std::vector<uint8_t>(t.bytes.begin(), t.bytes.end()))
        << t.name;
  }
  EXPECT_EQ((*reader)->Find("missing"), nullptr);
  EXPECT_EQ(FromBytes<double>((*reader)->Data(*(*reader)->Find("a/f64"))), f64);
  EXPECT_EQ(FromBytes<int32_t>((*reader)->Data(*(*reader)->Find("scalar_i32"))), i32);
  EXPECT_TRUE((*reader)->Data(*(*reader)->Find("empty_last")).empty());
}

TEST(Safetensors, WritesAndReadsAFileWithoutTensors) {
  const std::string path = TestDir() + "/none.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {}).ok());
  EXPECT_EQ(ReadFile(path), LengthPrefix(8) + "{}      ");
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->tensors().empty());
  EXPECT_TRUE((*reader)->metadata().empty());
}

TEST(Safetensors, OverwritesAnExistingFileAndLeavesNoTemporaryFiles) {
  const std::string dir = TestDir();
  const std::string path = dir + "/w.safetensors";
  std::vector<float> first = {1, 2, 3};
  std::vector<float> second = {4, 5};
  ASSERT_TRUE(WriteSafetensors(path, {{"w", DType::kF32, {3}, AsBytes(first)}}).ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"w", DType::kF32, {2}, AsBytes(second)}}).ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(FromBytes<float>((*reader)->Data(*(*reader)->Find("w"))), second);
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"w.safetensors"});
}

// The file was written by Python's safetensors package
// (tests/testdata/safetensors/make_python_written.py).
TEST(Safetensors, ReadsAFileWrittenByPythonAndWritesTheSameBytes) {
  const std::string path = DataPath("tests/testdata/safetensors/python_written.safetensors");
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const SafetensorsReader& r = **reader;
  EXPECT_EQ(r.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(r.tensors().size(), 6u);

  const TensorInfo* weight = r.Find("weight");
  ASSERT_NE(weight, nullptr);
  EXPECT_EQ(weight->dtype, DType::kF32);
  EXPECT_EQ(weight->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(FromBytes<float>(r.Data(*weight)), (std::vector<float>{0, 0.5, 1, 1.5, 2, 2.5}));

  const TensorInfo* bias = r.Find("bias");
  ASSERT_NE(bias, nullptr);
  EXPECT_EQ(bias->dtype, DType::kI64);
  EXPECT_EQ(FromBytes<int64_t>(r.Data(*bias)), (std::vector<int64_t>{-1, 2, -3}));

  const TensorInfo* scale = r.Find("scale");
  ASSERT_NE(scale, nullptr);
  EXPECT_EQ(scale->dtype, DType::kF64);
  EXPECT_TRUE(scale->shape.empty());
  EXPECT_EQ(FromBytes<double>(r.Data(*scale)), (std::vector<double>{3.25}));

  const TensorInfo* mask = r.Find("mask");
  ASSERT_NE(mask, nullptr);
  EXPECT_EQ(mask->dtype, DType::kBool);
  EXPECT_EQ(FromBytes<uint8_t>(r.Data(*mask)), (std::vector<uint8_t>{1, 0, 1, 1}));

  const TensorInfo* half = r.Find("half");
  ASSERT_NE(half, nullptr);
  EXPECT_EQ(half->dtype, DType::kF16);
  EXPECT_EQ(FromBytes<uint16_t>(r.Data(*half)), (std::vector<uint16_t>{0x3e00, 0xc000}));

  const TensorInfo* empty = r.Find("empty");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->dtype, DType::kI32);
  EXPECT_EQ(empty->shape, (std::vector<int64_t>{0, 4}));
  EXPECT_TRUE(r.Data(*empty).empty());

  // Python lays tensors out by dtype alignment, then name; written in that
  // order with the same metadata, our file is byte for byte the same.
  std::vector<TensorToWrite> same_order;
  for (const char* name : {"bias", "scale", "weight", "empty", "half", "mask"}) {
    const TensorInfo* info = r.Find(name);
    ASSERT_NE(info, nullptr) << name;
    same_order.push_back({info->name, info->dtype, info->shape, r.Data(*info)});
  }
  const std::string ours = TestDir() + "/ours.safetensors";
  ASSERT_TRUE(WriteSafetensors(ours, same_order, r.metadata()).ok());
  EXPECT_EQ(ReadFile(ours), ReadFile(path));
}

TEST(Safetensors, MissingFileIsNotFound) {
  const std::string path = TestDir() + "/does_not_exist.safetensors";
  auto reader = SafetensorsReader::Open(path);
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(reader.status().message()), HasSubstr(path));
}

TEST(Safetensors, DirectoryIsRejected) {
  auto reader = SafetensorsReader::Open(TestDir());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(reader.status().message()), HasSubstr("not a regular file"));
}

// A valid two-tensor file to corrupt: "a" is F32 [2] at [0, 8], "b" is I8
// [3] at [8, 11].
const char kGoodHeader[] =
    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
    R"("b":{"dtype":"I8","shape":[3],"data_offsets":[8,11]}})";
const std::string kGoodData = std::string(11, '\x01');

TEST(SafetensorsCorruption, TheUncorruptedFileIsValid) {
  const std::string path = TestDir() + "/good.safetensors";
  WriteFile(path, RawFile(kGoodHeader, kGoodData));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->tensors().size(), 2u);
}

TEST(SafetensorsCorruption, TruncatedData) {
  std::string file = RawFile(kGoodHeader, kGoodData);
  ExpectInvalid("t.safetensors", file.substr(0, file.size() - 2),
                {"tensor \"b\"", "data_offsets", "[8, 11]", "truncated"});
}

TEST(SafetensorsCorruption, ShorterThanTheLengthField) {
  ExpectInvalid("t.safetensors", std::string("\x10\0\0", 3), {"truncated", "3 bytes"});
  ExpectInvalid("empty.safetensors", "", {"truncated", "0 bytes"});
}

TEST(SafetensorsCorruption, HeaderLongerThanTheFile) {
  std::string header = kGoodHeader;
  ExpectInvalid("t.safetensors", LengthPrefix(header.size() + 100) + header + kGoodData,
                {"truncated", absl::StrCat("header length ", header.size() + 100)});
}

TEST(SafetensorsCorruption, HeaderLengthZero) {
  ExpectInvalid("t.safetensors", LengthPrefix(0) + "{}", {"header length is 0"});
}

TEST(SafetensorsCorruption, HeaderLengthAbsurd) {
  ExpectInvalid("t.safetensors", LengthPrefix(uint64_t{1} << 62) + "{}", {"exceeds the limit"});
}

TEST(SafetensorsCorruption, BadJson) {
  ExpectInvalid("t.safetensors", RawFile(R"({"a":{"dtype":"F32",)", ""), {"not valid JSON"});
  ExpectInvalid("u.safetensors", RawFile("\xff\xfe", ""), {"not valid JSON"});
}

TEST(SafetensorsCorruption, JsonThatIsNotAnObject) {
  ExpectInvalid("t.safetensors", RawFile("[1, 2, 3]", ""), {"not a JSON object"});
  ExpectInvalid("u.safetensors", RawFile(R"({"a": 3})", ""),
                {"tensor \"a\"", "not a JSON object"});
}

TEST(SafetensorsCorruption, DataOffsetsNotMatchingTheShape) {
  ExpectInvalid("t.safetensors",
                RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,7]}})",
                        std::string(7, '\0')),
                {"tensor \"a\"", "data_offsets", "[0, 7]", "spans 7 bytes", "needs 8"});
}

TEST(SafetensorsCorruption, DataOffsetsReversedOrMalformed) {
  ExpectInvalid("t.safetensors",
                RawFile(R"({"a":{"dtype":"I8","shape":[0],"data_offsets":[4,0]}})",
                        std::string(4, '\0')),
                {"tensor \"a\"", "data_offsets", "ends before it begins"});
  ExpectInvalid("u.safetensors",
                RawFile(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0]}})", "x"),
                {"tensor \"a\"", "data_offsets", "not a pair"});
  ExpectInvalid("v.safetensors",
                RawFile(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[-1,0]}})", "x"),
                {"tensor \"a\"", "data_offsets", "not a pair"});
}

TEST(SafetensorsCorruption, DataOffsetsPastTheEnd) {
  ExpectInvalid("t.safetensors",
                RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        std::string(8, '\0')),
                {"tensor \"a\"", "data_offsets", "[4, 12]", "runs past"});
}

TEST(SafetensorsCorruption, OverlappingTensors) {
  ExpectInvalid("t.safetensors",
                RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"I8","shape":[4],"data_offsets":[4,8]}})",
                        std::string(8, '\0')),
                {"tensor \"b\"", "data_offsets", "[4, 8]", "overlaps tensor \"a\""});
}

TEST(SafetensorsCorruption, GapBetweenTensors) {
  ExpectInvalid("t.safetensors",
                RawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"I8","shape":[4],"data_offsets":[6,10]}})",
                        std::string(10, '\0')),
                {"tensor \"b\"", "data_offsets", "gap", "[4, 6)"});
}

TEST(SafetensorsCorruption, TrailingGarbage) {
  ExpectInvalid("t.safetensors", RawFile(kGoodHeader, kGoodData + "junk"),
                {"trailing bytes", "4 trailing"});
}

TEST(SafetensorsCorruption, UnknownDType) {
  ExpectInvalid("t.safetensors",
                RawFile(R"({"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})",
                        std::string(8, '\0')),
                {"tensor \"a\"", "dtype", "\"F31\""});
  ExpectInvalid("u.safetensors",
                RawFile(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})",
                        std::string(8, '\0')),
                {"tensor \"a\"", "dtype", "not a string"});
}

TEST(SafetensorsCorruption, NegativeOrNonIntegerShape) {
  ExpectInvalid("t.safetensors",
                RawFile(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                        std::string(8, '\0')),
                {"tensor \"a\"", "shape", "negative dimension -2"});
  ExpectInvalid("u.safetensors",
                RawFile(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})",
                        std::string(8, '\0')),
                {"tensor \"a\"", "shape", "invalid dimension"});
  ExpectInvalid("v.safetensors",
                RawFile(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})",
                        std::string(8, '\0')),
                {"tensor \"a\"", "shape", "not an array"});
}

TEST(SafetensorsCorruption, ShapeWhoseSizeOverflows) {
  ExpectInvalid(
      "t.safetensors",
      RawFile(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
              std::string(8, '\0')),
      {"tensor \"a\"", "shape", "overflows"});
}

TEST(SafetensorsCorruption, MissingOrUnknownFields) {
  ExpectInvalid("t.safetensors",
                RawFile(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0')),
                {"tensor \"a\"", "missing field \"shape\""});
  ExpectInvalid("u.safetensors", RawFile(R"({"a":{"dtype":"F32","shape":[2]}})", ""),
                {"tensor \"a\"", "missing field \"data_offsets\""});
  ExpectInvalid("v.safetensors",
                RawFile(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
                {"tensor \"a\"", "missing field \"dtype\""});
  ExpectInvalid("w.safetensors",
                RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})",
                        std::string(8, '\0')),
                {"tensor \"a\"", "unknown field \"x\""});
}

TEST(SafetensorsCorruption, BadMetadata) {
  ExpectInvalid("t.safetensors", RawFile(R"({"__metadata__":{"step":3}})", ""),
                {"__metadata__", "\"step\"", "not a string"});
  ExpectInvalid("u.safetensors", RawFile(R"({"__metadata__":["x"]})", ""),
                {"__metadata__", "not a JSON object"});
}

TEST(SafetensorsCorruption, RepeatedTensorName) {
  ExpectInvalid("t.safetensors",
                RawFile(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},)"
                        R"("a":{"dtype":"I8","shape":[1],"data_offsets":[1,2]}})",
                        std::string(2, '\0')),
                {"repeats the key \"a\""});
}

TEST(SafetensorsWriter, RejectsBadInputAndKeepsTheExistingFile) {
  const std::string dir = TestDir();
  const std::string path = dir + "/keep.safetensors";
  std::vector<float> values = {1, 2};
  ASSERT_TRUE(WriteSafetensors(path, {{"w", DType::kF32, {2}, AsBytes(values)}}).ok());
  const std::string before = ReadFile(path);

  struct Case {
    std::vector<TensorToWrite> tensors;
    std::map<std::string, std::string> metadata;
    std::string expected;
  };
  std::vector<Case> cases = {
      {{{"", DType::kF32, {2}, AsBytes(values)}}, {}, "empty name"},
      {{{"x", DType::kF32, {2}, AsBytes(values)}, {"x", DType::kF32, {2}, AsBytes(values)}},
       {},
       "tensor \"x\" appears twice"},
      {{{"x", DType::kF32, {3}, AsBytes(values)}}, {}, "needs 12 bytes but 8 were given"},
      {{{"x", DType::kF32, {-2}, AsBytes(values)}}, {}, "negative dimension"},
      {{{"__metadata__", DType::kF32, {2}, AsBytes(values)}}, {}, "__metadata__"},
      {{{"x", DType::kF32, {2}, AsBytes(values)}}, {{"__metadata__", "v"}}, "__metadata__"},
  };
  for (const Case& c : cases) {
    absl::Status status = WriteSafetensors(path, c.tensors, c.metadata);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), StartsWith(path + ": "));
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.expected));
  }
  EXPECT_EQ(ReadFile(path), before);
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"keep.safetensors"});
}

TEST(SafetensorsWriter, FailedWriteKeepsTheExistingFile) {
  const std::string dir = TestDir();
  const std::string path = dir + "/keep.safetensors";
  std::vector<float> small = {1, 2, 3};
  ASSERT_TRUE(WriteSafetensors(path, {{"w", DType::kF32, {3}, AsBytes(small)}}).ok());
  const std::string before = ReadFile(path);

  // Make the disk "fill up" part-way through the new file: writes past 64 KiB
  // fail with EFBIG (SIGXFSZ ignored so the process survives).
  std::vector<float> big(1 << 20, 0.5f);
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  struct rlimit low = old_limit;
  low.rlim_cur = 64 << 10;
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &low), 0);
  absl::Status status = WriteSafetensors(path, {{"w", DType::kF32, {1 << 20}, AsBytes(big)}});
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  ::signal(SIGXFSZ, old_handler);

  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_THAT(std::string(status.message()), StartsWith(path + ": "));
  EXPECT_THAT(std::string(status.message()), HasSubstr("write failed"));
  EXPECT_EQ(ReadFile(path), before);
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"keep.safetensors"});
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(FromBytes<float>((*reader)->Data(*(*reader)->Find("w"))), small);
}

TEST(SafetensorsWriter, MissingFolderIsAnError) {
  const std::string path = TestDir() + "/no/such/folder/x.safetensors";
  absl::Status status = WriteSafetensors(path, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
}

TEST(SafetensorsFromBytesTest, ReadsWhatOpenReadsAndRejectsTheSameDefects) {
  const std::string path = TestDir() + "/t.safetensors";
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.5f};
  TensorToWrite t{"w", DType::kF32, {2, 3},
                  absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(values.data()),
                                            values.size() * sizeof(float))};
  ASSERT_TRUE(WriteSafetensors(path, {t}, {{"k", "v"}}).ok());
  auto bytes = ReadFile(path);
  auto reader = SafetensorsReader::FromBytes(bytes, "upload.safetensors");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->path(), "upload.safetensors");
  EXPECT_EQ((*reader)->metadata().at("k"), "v");
  const TensorInfo* w = (*reader)->Find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  absl::Span<const uint8_t> data = (*reader)->Data(*w);
  ASSERT_EQ(data.size(), values.size() * sizeof(float));
  EXPECT_EQ(std::memcmp(data.data(), values.data(), data.size()), 0);

  for (const std::string& bad : {std::string("short"), bytes.substr(0, bytes.size() - 1),
                                 RawFile("{\"w\": 1}", ""), RawFile("[", "")}) {
    auto r = SafetensorsReader::FromBytes(bad, "upload.safetensors");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_THAT(std::string(r.status().message()), StartsWith("upload.safetensors: "));
  }
}

}  // namespace
}  // namespace mpt
