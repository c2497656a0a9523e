#include "common/metrics/process_metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

std::optional<double> BootTimeSeconds() {
  std::ifstream in("/proc/stat");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
  }
  return std::nullopt;
}

}  // namespace

std::optional<ProcessStats> ReadProcessStats() {
  std::ifstream stat_file("/proc/self/stat");
  std::string stat;
  if (!stat_file || !std::getline(stat_file, stat)) return std::nullopt;
  // The command name (field 2) is in parentheses and may hold spaces: the
  // fields after it start after the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state): utime is field 14, stime 15, starttime 22,
  // vsize 23, rss 24 (in pages).
  if (f.size() < 22) return std::nullopt;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const long page = sysconf(_SC_PAGESIZE);
  ProcessStats s;
  try {
    s.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks;
    const double start_ticks = std::stod(f[19]);
    s.virtual_bytes = std::stoll(f[20]);
    s.resident_bytes = std::stoll(f[21]) * page;
    if (std::optional<double> boot = BootTimeSeconds()) {
      s.start_time_seconds = *boot + start_ticks / ticks;
    }
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++s.open_fds;
    closedir(dir);
    s.open_fds = s.open_fds >= 3 ? s.open_fds - 3 : 0;  // ".", ".." and the DIR's own fd
  }
  return s;
}

absl::Status AddProcessMetrics(MetricsRegistry* registry) {
  ASSIGN_OR_RETURN(GaugeFamily * resident,
                   registry->AddGauge("process_resident_memory_bytes",
                                      "Resident memory size in bytes."));
  ASSIGN_OR_RETURN(GaugeFamily * virt, registry->AddGauge("process_virtual_memory_bytes",
                                                          "Virtual memory size in bytes."));
  ASSIGN_OR_RETURN(CounterFamily * cpu,
                   registry->AddCounter("process_cpu_seconds_total",
                                        "Total user and system CPU time spent in seconds."));
  ASSIGN_OR_RETURN(GaugeFamily * fds,
                   registry->AddGauge("process_open_fds", "Number of open file descriptors."));
  ASSIGN_OR_RETURN(GaugeFamily * start,
                   registry->AddGauge("process_start_time_seconds",
                                      "Start time of the process since unix epoch in seconds."));
  registry->AddCollectHook([=] {
    std::optional<ProcessStats> s = ReadProcessStats();
    if (!s.has_value()) return;
    resident->Labels({}).Set(static_cast<double>(s->resident_bytes));
    virt->Labels({}).Set(static_cast<double>(s->virtual_bytes));
    cpu->Labels({}).SetTotal(s->cpu_seconds);
    fds->Labels({}).Set(static_cast<double>(s->open_fds));
    start->Labels({}).Set(s->start_time_seconds);
  });
  return absl::OkStatus();
}

}  // namespace mpt
