// The scheduling decision: which ready stages start on which idle workers.
// A pure function from a view of the cluster to a list of actions; the
// coordinator builds the view from its state and carries the actions out
// (see "Scheduling" in coordinator.h for the policy). Thread-safe.
#ifndef MPT_SERVER_SCHEDULER_H_
#define MPT_SERVER_SCHEDULER_H_

#include <string>
#include <utility>
#include <vector>

namespace mpt {

// A live (not lost) worker.
struct SchedulerWorker {
  // Base models it can run, exactly as specs name them; empty: any.
  std::vector<std::string> models;
  // Collectives it supports ("nccl", "gloo"); empty: "gloo" only.
  std::vector<std::string> collectives;
  // Runs nothing now.
  bool idle = false;
  // The most stages it trains in one pass (Worker.max_pack_size); values
  // below 2: one at a time, never packed.
  int max_pack = 1;
};

struct SchedulerStage {
  // QUEUED and every stage it depends on SUCCEEDED.
  bool ready = false;
  // Ranks it needs (values below 1 count as 1).
  int world_size = 1;
  // Stages with the same non-empty key may train in one pass on one worker
  // (a source stage: the base model and prompt shape); empty: never packed.
  std::string pack_key;
  // Workers (indices into ClusterView::workers) on which the stage's last
  // attempt failed. A single-worker stage starts on another idle worker
  // that can run it; when none is idle it waits for one, and only when no
  // other live worker can run it does it start on one of these. A gang
  // (which cannot tell which member failed it) takes idle workers not in
  // the list first and fills up with these, without waiting.
  std::vector<int> avoid;
};

// A QUEUED or RUNNING job.
struct SchedulerJob {
  std::string base_model;
  // The job was already told that its gang waits for workers that are not
  // registered (no second note until one of its stages starts).
  bool gang_note_sent = false;
  // In stage order.
  std::vector<SchedulerStage> stages;
};

struct ClusterView {
  // Live workers in registration order.
  std::vector<SchedulerWorker> workers;
  // Most stages one worker trains in one pass (see ScheduleAction::packed),
  // further capped by each worker's own max_pack; 1 or less: no packing.
  int max_pack_size = 1;
  // Unfinished jobs in scheduling order (higher priority first, then
  // submission order).
  std::vector<SchedulerJob> jobs;
};

struct ScheduleAction {
  enum class Kind {
    // Start stage `stage` of job `job` on `workers` (rank r on workers[r])
    // with `collective` ("" for a single worker).
    kStart,
    // A gang that cannot start yet holds the idle `workers` it will use
    // (they get no other work in this pass).
    kHold,
    // Tell job `job` that its gang stage `stage` waits for `world_size`
    // workers while only `registered` eligible ones exist.
    kWaitNote,
  };
  Kind kind = Kind::kStart;
  int job = 0;    // index into ClusterView::jobs
  int stage = 0;  // index into that job's stages
  std::vector<int> workers;  // indices into ClusterView::workers
  // kStart of a single-worker stage only: further (job, stage) pairs that
  // start on the same worker in the same pass, all with the stage's
  // pack_key. Only ready stages that found no idle worker of their own are
  // packed, so packing never leaves a worker idle that could take a stage;
  // they are spread round-robin over the pass's starts of the same key, in
  // scheduling order, up to min(max_pack_size, the worker's max_pack)
  // stages per worker.
  std::vector<std::pair<int, int>> packed;
  std::string collective;
  int world_size = 0;
  int registered = 0;
};

// True when `worker` may run a job on `base_model`.
bool WorkerCanRun(const SchedulerWorker& worker, const std::string& base_model);
// True when `worker` supports `collective` (no collectives listed: gloo).
bool WorkerSupports(const SchedulerWorker& worker, const std::string& collective);

// The actions for one scheduling pass over `view`, in the order they must
// be carried out. Never fails; an empty list when nothing can start.
std::vector<ScheduleAction> Schedule(const ClusterView& view);

}  // namespace mpt

#endif  // MPT_SERVER_SCHEDULER_H_
