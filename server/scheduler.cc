#include "server/scheduler.h"

#include <algorithm>

namespace mpt {

bool WorkerCanRun(const SchedulerWorker& worker, const std::string& base_model) {
  if (worker.models.empty()) return true;
  return std::find(worker.models.begin(), worker.models.end(), base_model) !=
         worker.models.end();
}

bool WorkerSupports(const SchedulerWorker& worker, const std::string& collective) {
  if (worker.collectives.empty()) return collective == "gloo";
  return std::find(worker.collectives.begin(), worker.collectives.end(), collective) !=
         worker.collectives.end();
}

namespace {

// The pass without packing: ready stages onto idle workers, gangs held or
// noted.
std::vector<ScheduleAction> ScheduleStarts(const ClusterView& view);

// Puts ready single-worker stages that got no worker of their own into the
// packs of this pass's starts with the same key (see ScheduleAction::packed).
void PackLeftovers(const ClusterView& view, std::vector<ScheduleAction>* actions) {
  if (view.max_pack_size <= 1) return;
  std::vector<std::vector<bool>> started(view.jobs.size());
  for (size_t j = 0; j < view.jobs.size(); ++j) {
    started[j].assign(view.jobs[j].stages.size(), false);
  }
  for (const ScheduleAction& a : *actions) {
    if (a.kind == ScheduleAction::Kind::kStart) started[a.job][a.stage] = true;
  }
  // Per key, the starts that can take more stages, visited round-robin.
  std::vector<ScheduleAction*> hosts;
  for (ScheduleAction& a : *actions) {
    if (a.kind != ScheduleAction::Kind::kStart || a.workers.size() != 1) continue;
    if (view.jobs[a.job].stages[a.stage].pack_key.empty()) continue;
    hosts.push_back(&a);
  }
  if (hosts.empty()) return;
  size_t next = 0;
  for (int j = 0; j < static_cast<int>(view.jobs.size()); ++j) {
    const SchedulerJob& job = view.jobs[j];
    for (int s = 0; s < static_cast<int>(job.stages.size()); ++s) {
      const SchedulerStage& stage = job.stages[s];
      if (!stage.ready || started[j][s] || stage.pack_key.empty() ||
          std::max(1, stage.world_size) != 1) {
        continue;
      }
      // The next host (round-robin) with the same key, room left and a
      // worker that can run this job's model.
      for (size_t tried = 0; tried < hosts.size(); ++tried) {
        ScheduleAction* host = hosts[(next + tried) % hosts.size()];
        const SchedulerStage& host_stage = view.jobs[host->job].stages[host->stage];
        const int room =
            std::min(view.max_pack_size, view.workers[host->workers[0]].max_pack);
        if (host_stage.pack_key != stage.pack_key ||
            static_cast<int>(host->packed.size()) + 1 >= room ||
            !WorkerCanRun(view.workers[host->workers[0]], job.base_model)) {
          continue;
        }
        host->packed.emplace_back(j, s);
        started[j][s] = true;
        next = (next + tried + 1) % hosts.size();
        break;
      }
    }
  }
}

}  // namespace

std::vector<ScheduleAction> Schedule(const ClusterView& view) {
  std::vector<ScheduleAction> actions = ScheduleStarts(view);
  PackLeftovers(view, &actions);
  return actions;
}

namespace {

std::vector<ScheduleAction> ScheduleStarts(const ClusterView& view) {
  std::vector<ScheduleAction> actions;
  std::vector<int> idle;  // in registration order
  for (int i = 0; i < static_cast<int>(view.workers.size()); ++i) {
    if (view.workers[i].idle) idle.push_back(i);
  }
  for (int j = 0; j < static_cast<int>(view.jobs.size()); ++j) {
    if (idle.empty()) return actions;
    const SchedulerJob& job = view.jobs[j];
    const std::string& model = job.base_model;
    bool note_sent = job.gang_note_sent;
    auto eligible = [&](int w, const std::string& collective) {
      return WorkerCanRun(view.workers[w], model) && WorkerSupports(view.workers[w], collective);
    };
    for (int s = 0; s < static_cast<int>(job.stages.size()); ++s) {
      if (idle.empty()) return actions;
      const SchedulerStage& stage = job.stages[s];
      if (!stage.ready) continue;
      const int world = std::max(1, stage.world_size);
      auto avoided = [&](int w) {
        return std::find(stage.avoid.begin(), stage.avoid.end(), w) != stage.avoid.end();
      };
      if (world == 1) {
        auto it = std::find_if(idle.begin(), idle.end(), [&](int w) {
          return WorkerCanRun(view.workers[w], model) && !avoided(w);
        });
        if (it == idle.end() && !stage.avoid.empty()) {
          // Only a worker it failed on is idle: take it when no other live
          // worker could ever run the stage, else wait for one.
          bool other = false;
          for (int w = 0; w < static_cast<int>(view.workers.size()); ++w) {
            if (!avoided(w) && WorkerCanRun(view.workers[w], model)) other = true;
          }
          if (!other) {
            it = std::find_if(idle.begin(), idle.end(),
                              [&](int w) { return WorkerCanRun(view.workers[w], model); });
          }
        }
        if (it == idle.end()) continue;
        ScheduleAction start;
        start.kind = ScheduleAction::Kind::kStart;
        start.job = j;
        start.stage = s;
        start.workers = {*it};
        start.world_size = 1;
        idle.erase(it);
        actions.push_back(std::move(start));
        note_sent = false;  // starting a stage re-arms the job's gang note
        continue;
      }
      // A gang: W idle workers that can run the model and share a collective.
      bool started = false;
      std::string hold_collective;
      int best_live = 0;
      for (const std::string collective : {"nccl", "gloo"}) {
        std::vector<int> members;
        for (int w : idle) {
          if (eligible(w, collective)) members.push_back(w);
        }
        // Idle workers the last attempt did not run on come first; the
        // gang does not wait for them.
        std::stable_partition(members.begin(), members.end(), [&](int w) { return !avoided(w); });
        if (static_cast<int>(members.size()) >= world) {
          members.resize(world);
          for (int m : members) idle.erase(std::find(idle.begin(), idle.end(), m));
          ScheduleAction start;
          start.kind = ScheduleAction::Kind::kStart;
          start.job = j;
          start.stage = s;
          start.workers = std::move(members);
          start.collective = collective;
          start.world_size = world;
          actions.push_back(std::move(start));
          note_sent = false;
          started = true;
          break;
        }
        int live = 0;
        for (int w = 0; w < static_cast<int>(view.workers.size()); ++w) {
          if (eligible(w, collective)) ++live;
        }
        if (live > best_live) {
          best_live = live;
          hold_collective = collective;
        }
      }
      if (started) continue;
      if (best_live >= world) {
        // Hold the idle workers this gang will use once the busy ones free up.
        ScheduleAction hold;
        hold.kind = ScheduleAction::Kind::kHold;
        hold.job = j;
        hold.stage = s;
        hold.collective = hold_collective;
        hold.world_size = world;
        hold.registered = best_live;
        for (auto it = idle.begin();
             it != idle.end() && static_cast<int>(hold.workers.size()) < world;) {
          if (eligible(*it, hold_collective)) {
            hold.workers.push_back(*it);
            it = idle.erase(it);
          } else {
            ++it;
          }
        }
        actions.push_back(std::move(hold));
      } else if (!note_sent) {
        note_sent = true;
        ScheduleAction note;
        note.kind = ScheduleAction::Kind::kWaitNote;
        note.job = j;
        note.stage = s;
        note.world_size = world;
        note.registered = best_live;
        actions.push_back(std::move(note));
      }
    }
  }
  return actions;
}

}  // namespace

}  // namespace mpt
