#include "server/resource_names.h"

#include <algorithm>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/quote.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace mpt {


absl::Status CheckJobName(absl::string_view name, absl::string_view field) {
  absl::string_view id = name;
  if (name.size() > kMaxResourceNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", QuoteForError(name),
                                                   " is not a job name: longer than ",
                                                   kMaxResourceNameBytes, " bytes"));
  }
  if (!absl::ConsumePrefix(&id, "jobs/") || id.empty() || absl::StrContains(id, '/')) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", QuoteForError(name), " is not a job name (jobs/{job_id})"));
  }
  return absl::OkStatus();
}

absl::Status CheckArtifactName(absl::string_view name, absl::string_view field) {
  if (name.size() > kMaxResourceNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", QuoteForError(name),
                                                   " is not an artefact name: longer than ",
                                                   kMaxResourceNameBytes, " bytes"));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  if (parts.size() != 4 || parts[0] != "jobs" || parts[1].empty() || parts[2] != "artifacts" ||
      parts[3].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", QuoteForError(name), " is not an artefact name (jobs/{job_id}/artifacts/{artifact_id})"));
  }
  return absl::OkStatus();
}

std::string ArtifactId(const std::string& stage_id, const std::string& kind, int attempt,
                       int64_t step) {
  std::string stage = stage_id;
  std::replace(stage.begin(), stage.end(), '/', '-');
  if (kind == "checkpoint") return absl::StrCat(stage, "-checkpoint-", attempt, "-", step);
  return absl::StrCat(stage, "-", kind, "-", attempt);
}

std::string RandomId(absl::BitGen& gen) {
  return absl::StrFormat("%012x", absl::Uniform<uint64_t>(gen, 0, uint64_t{1} << 48));
}

std::string TimeOrderedId(absl::Time now, uint64_t* last, absl::BitGen& gen) {
  constexpr uint64_t kMask = (uint64_t{1} << 48) - 1;
  static const absl::Time epoch =
      absl::FromCivil(absl::CivilSecond(2024, 1, 1, 0, 0, 0), absl::UTCTimeZone());
  const int64_t ms = std::max<int64_t>(0, absl::ToInt64Milliseconds(now - epoch));
  uint64_t id = ((static_cast<uint64_t>(ms) << 8) | absl::Uniform<uint64_t>(gen, 0, 256)) & kMask;
  if (id <= *last && *last < kMask) id = *last + 1;
  *last = id;
  return absl::StrFormat("%012x", id);
}

std::string ListFilterKey(const mpt::v1::ListJobsRequest& request) {
  std::set<int> states(request.states().begin(), request.states().end());
  std::set<int> kinds(request.kinds().begin(), request.kinds().end());
  return absl::StrCat(absl::StrJoin(states, ","), "/", absl::StrJoin(kinds, ","));
}

std::string MakePageToken(int64_t last_seq, const std::string& filter_key) {
  return absl::WebSafeBase64Escape(absl::StrCat("v1:", last_seq, ":", filter_key));
}

absl::StatusOr<int64_t> ParsePageToken(const std::string& token, const std::string& filter_key) {
  std::string raw;
  const absl::Status bad = absl::InvalidArgumentError(
      "page_token: not a token this service returned (pass next_page_token unchanged)");
  if (!absl::WebSafeBase64Unescape(token, &raw)) return bad;
  std::vector<std::string> parts = absl::StrSplit(raw, absl::MaxSplits(':', 2));
  int64_t seq = 0;
  if (parts.size() != 3 || parts[0] != "v1" || !absl::SimpleAtoi(parts[1], &seq) || seq <= 0) {
    return bad;
  }
  if (parts[2] != filter_key) {
    return absl::InvalidArgumentError(
        "page_token: was made for other filters (states/kinds must stay the same while paging)");
  }
  return seq;
}

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  google::protobuf::Timestamp ts;
  int64_t seconds = absl::ToUnixSeconds(t);
  ts.set_seconds(seconds);
  ts.set_nanos(static_cast<int32_t>((t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
  return ts;
}

absl::Time FromTimestamp(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

}  // namespace mpt
