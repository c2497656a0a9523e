// Progress events (common/progress/progress.h) as the API's Progress message and
// back: workers send them to the coordinator, mptctl turns what it watches
// into events for the same terminal bar. Torch-free.
#ifndef MPT_COMMON_PROGRESS_PROGRESS_PROTO_H_
#define MPT_COMMON_PROGRESS_PROGRESS_PROTO_H_

#include "proto/mpt/v1/service.pb.h"
#include "common/progress/progress.h"

namespace mpt {

// stage, task, step, total_steps, losses, learning_rate, tokens_per_second,
// metrics and eta_seconds (-1 when unknown) carried over; the kind, the
// elapsed time and the message are not part of the proto.
mpt::v1::Progress ProgressToProto(const ProgressEvent& event);

// The reverse, with `kind` given; losses keep "loss" first, then the rest
// in name order (a proto map has no order); metrics in name order.
ProgressEvent ProgressFromProto(const mpt::v1::Progress& progress, ProgressKind kind);

}  // namespace mpt

#endif  // MPT_COMMON_PROGRESS_PROGRESS_PROTO_H_
