// UTF-8 checks of strings and of protobuf string fields still on the wire.
//
// Protobuf's parser refuses a proto3 `string` field that is not valid UTF-8
// without saying which field; ParseProtoStrict says which.
#ifndef MPT_COMMON_UTF8_H_
#define MPT_COMMON_UTF8_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace mpt {

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code
// points above U+10FFFF).
bool IsValidUtf8(absl::string_view s);

// The path of the first `string` field in the serialized message `wire` of
// type `type` whose value is not valid UTF-8, written like the planner's
// field paths: "spec.source.tasks[0].train_path" (repeated fields indexed
// by occurrence on the wire). std::nullopt when every string field is valid
// or when `wire` is not a well-formed message (nothing can be named then).
std::optional<std::string> FindInvalidUtf8Field(const google::protobuf::Descriptor& type,
                                                absl::string_view wire);

// Parses `wire` into `message` (cleared first). OK on success;
// INVALID_ARGUMENT "<field path>: a string field is not valid UTF-8" when a
// string field is not valid UTF-8; INVALID_ARGUMENT "the request is not a
// well-formed <type> message" for any other parse failure.
absl::Status ParseProtoStrict(absl::string_view wire, google::protobuf::Message* message);

}  // namespace mpt

#endif  // MPT_COMMON_UTF8_H_
