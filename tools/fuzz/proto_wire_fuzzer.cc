// libFuzzer target: the coordinator's splicing of serialized records
// (server/proto_wire.h) against protobuf's own parser. What the splicer
// reads as well-formed, protobuf must parse too, and a field it finds
// must be the one protobuf finds; what it removes must be gone.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/unknown_field_set.h"
#include "server/proto_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int field = 1 + data[0] % 16;
  absl::string_view message(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto found = mpt::FindLengthDelimitedField(message, field);
  if (!found.ok()) return 0;

  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    __builtin_trap();  // accepted here, rejected by protobuf
  }
  int count = 0;
  std::string theirs;
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField& f = fields.field(i);
    if (f.number() != field || f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      continue;
    }
    ++count;
    theirs = f.length_delimited();
  }
  if (count > 1) __builtin_trap();  // a repeated field must be reported as DATA_LOSS
  if (theirs != *found) __builtin_trap();

  const int removed[] = {field};
  auto rest = mpt::RemoveLengthDelimitedFields(message, removed);
  if (!rest.ok()) __builtin_trap();
  auto again = mpt::FindLengthDelimitedField(*rest, field);
  if (!again.ok() || !again->empty()) __builtin_trap();
  std::string appended = *rest;
  mpt::AppendLengthDelimitedField(field, *found, &appended);
  auto back = mpt::FindLengthDelimitedField(appended, field);
  if (!back.ok() || *back != *found) __builtin_trap();
  return 0;
}
