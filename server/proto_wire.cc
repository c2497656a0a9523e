#include "server/proto_wire.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace mpt {
namespace {

bool ReadVarint(absl::string_view* in, uint64_t* value) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in->empty()) return false;
    const uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    v |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = v;
      return true;
    }
  }
  return false;
}

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

absl::Status Malformed(int field) {
  return absl::DataLossError(
      absl::StrCat("a stored record is not well-formed (looking for field ", field, ")"));
}

constexpr uint64_t kMaxFieldNumber = (uint64_t{1} << 29) - 1;

// One top-level field of a serialized message.
struct WireField {
  int number = 0;
  int type = 0;                // the wire type
  absl::string_view whole;     // tag included
  absl::string_view payload;   // a length-delimited field's bytes
};

// Reads the next field off `in`; false when it is not well-formed (groups,
// wire types 3 and 4, are not used by proto3 and count as malformed, as do
// field numbers outside 1 to 2^29 - 1).
bool NextField(absl::string_view* in, WireField* f) {
  const absl::string_view start = *in;
  uint64_t tag = 0;
  // Field numbers run from 1 to 2^29 - 1 (protobuf's parser refuses the rest).
  if (!ReadVarint(in, &tag) || (tag >> 3) == 0 || (tag >> 3) > kMaxFieldNumber) return false;
  f->number = static_cast<int>(tag >> 3);
  f->type = static_cast<int>(tag & 7);
  f->payload = absl::string_view();
  switch (f->type) {
    case 0: {  // varint
      uint64_t ignored;
      if (!ReadVarint(in, &ignored)) return false;
      break;
    }
    case 1:  // 64-bit
      if (in->size() < 8) return false;
      in->remove_prefix(8);
      break;
    case 2: {  // length-delimited
      uint64_t length = 0;
      if (!ReadVarint(in, &length) || length > in->size()) return false;
      f->payload = in->substr(0, static_cast<size_t>(length));
      in->remove_prefix(static_cast<size_t>(length));
      break;
    }
    case 5:  // 32-bit
      if (in->size() < 4) return false;
      in->remove_prefix(4);
      break;
    default:
      return false;
  }
  f->whole = start.substr(0, start.size() - in->size());
  return true;
}

}  // namespace

absl::StatusOr<absl::string_view> FindLengthDelimitedField(absl::string_view message, int field) {
  absl::string_view found;
  bool seen = false;
  absl::string_view in = message;
  WireField f;
  while (!in.empty()) {
    if (!NextField(&in, &f)) return Malformed(field);
    if (f.type != 2 || f.number != field) continue;
    if (seen) {
      return absl::DataLossError(absl::StrCat("a stored record holds field ", field, " twice"));
    }
    seen = true;
    found = f.payload;
  }
  return found;
}

absl::StatusOr<std::string> RemoveLengthDelimitedFields(absl::string_view message,
                                                        absl::Span<const int> fields) {
  std::string out;
  out.reserve(message.size());
  absl::string_view in = message;
  WireField f;
  while (!in.empty()) {
    if (!NextField(&in, &f)) {
      return absl::DataLossError("a stored record is not well-formed");
    }
    if (f.type == 2 && std::find(fields.begin(), fields.end(), f.number) != fields.end()) {
      continue;
    }
    out.append(f.whole.data(), f.whole.size());
  }
  return out;
}

void AppendLengthDelimitedField(int field, absl::string_view bytes, std::string* out) {
  AppendVarint((static_cast<uint64_t>(field) << 3) | 2, out);
  AppendVarint(bytes.size(), out);
  out->append(bytes.data(), bytes.size());
}

}  // namespace mpt
