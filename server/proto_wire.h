// Splicing serialized protos without parsing them: find a length-delimited
// field of a serialized message, append one, drop some. ListJobs and GetJob build their
// answers from the stored records' bytes this way (a stored JobRecord's
// `job` plus each StageRecord's `stage` as Job.stages), so a page costs
// copies, not a parse and a serialization of every job.
//
// The protobuf wire format allows it: a message's fields may come in any
// order, and a repeated message field is the concatenation of its
// length-delimited entries.
#ifndef MPT_SERVER_PROTO_WIRE_H_
#define MPT_SERVER_PROTO_WIRE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "absl/strings/string_view.h"

namespace mpt {

// The bytes of the top-level length-delimited field numbered `field` of
// `message` (a view into it); an empty view when the field is absent.
// DATA_LOSS when `message` is not well-formed wire format or the field
// occurs twice (a singular message field is written once by protobuf).
absl::StatusOr<absl::string_view> FindLengthDelimitedField(absl::string_view message, int field);

// Appends field `field` with `bytes` as a length-delimited entry.
void AppendLengthDelimitedField(int field, absl::string_view bytes, std::string* out);

// `message` without its top-level length-delimited fields numbered in
// `fields` (every other field copied as it is). DATA_LOSS when `message`
// is not well-formed wire format.
absl::StatusOr<std::string> RemoveLengthDelimitedFields(absl::string_view message,
                                                        absl::Span<const int> fields);

}  // namespace mpt

#endif  // MPT_SERVER_PROTO_WIRE_H_
