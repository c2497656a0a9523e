#include "common/utf8.h"

#include <cstdint>

#include "absl/container/flat_hash_map.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace mpt {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::io::CodedInputStream;
using google::protobuf::internal::WireFormatLite;

// Deeper messages than this are not walked (protobuf's own default limit).
constexpr int kMaxDepth = 100;

// Walks one message. Returns false when the wire format is malformed; sets
// `*found` to the path of the first invalid string field.
bool Walk(const Descriptor& type, absl::string_view wire, const std::string& prefix, int depth,
          std::optional<std::string>* found) {
  if (depth > kMaxDepth) return false;
  CodedInputStream input(reinterpret_cast<const uint8_t*>(wire.data()),
                         static_cast<int>(wire.size()));
  // Occurrences so far of each repeated field, for the [i] in paths.
  absl::flat_hash_map<int, int> occurrences;
  while (true) {
    const uint32_t tag = input.ReadTag();
    if (tag == 0) return input.CurrentPosition() == static_cast<int>(wire.size());
    const int number = WireFormatLite::GetTagFieldNumber(tag);
    const FieldDescriptor* field = type.FindFieldByNumber(number);
    if (field == nullptr ||
        WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED ||
        (field->type() != FieldDescriptor::TYPE_STRING &&
         field->type() != FieldDescriptor::TYPE_MESSAGE)) {
      if (!WireFormatLite::SkipField(&input, tag)) return false;
      continue;
    }
    uint32_t length = 0;
    if (!input.ReadVarint32(&length)) return false;
    std::string value;
    if (!input.ReadString(&value, static_cast<int>(length))) return false;
    std::string path = prefix.empty() ? field->name() : absl::StrCat(prefix, ".", field->name());
    if (field->is_repeated()) absl::StrAppend(&path, "[", occurrences[number]++, "]");
    if (field->type() == FieldDescriptor::TYPE_STRING) {
      if (!IsValidUtf8(value)) {
        *found = std::move(path);
        return true;
      }
    } else {
      if (!Walk(*field->message_type(), value, path, depth + 1, found)) return false;
      if (found->has_value()) return true;
    }
  }
}

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    int n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++p;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += n + 1;
  }
  return true;
}

std::optional<std::string> FindInvalidUtf8Field(const Descriptor& type, absl::string_view wire) {
  std::optional<std::string> found;
  if (!Walk(type, wire, "", 0, &found)) return std::nullopt;
  return found;
}

absl::Status ParseProtoStrict(absl::string_view wire, google::protobuf::Message* message) {
  if (wire.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError("the request is larger than 2 GiB");
  }
  if (message->ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return absl::OkStatus();
  }
  std::optional<std::string> field = FindInvalidUtf8Field(*message->GetDescriptor(), wire);
  message->Clear();
  if (field.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(*field, ": a string field is not valid UTF-8"));
  }
  return absl::InvalidArgumentError(absl::StrCat("the request is not a well-formed ",
                                                 message->GetDescriptor()->full_name(),
                                                 " message"));
}

}  // namespace mpt
