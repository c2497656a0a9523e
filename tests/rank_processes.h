// Runs the ranks of a collective test as separate processes.
//
// A test binary that uses this has its own main(): when its first argument
// is kRankRoleFlag it plays one rank (the role and its arguments follow)
// and exits; otherwise it runs the tests. SpawnSelf starts the binary again
// through /proc/self/exe with such arguments, so each rank is a fresh
// process (no state inherited from the test, libtorch's thread pools
// included), and WaitForRanks collects the exit codes with a deadline so a
// hung rank fails the test instead of hanging it.
#ifndef MPT_TESTS_RANK_PROCESSES_H_
#define MPT_TESTS_RANK_PROCESSES_H_

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace mpt::testing {

inline constexpr char kRankRoleFlag[] = "--rank_role";

// Exit code WaitForRanks reports for a rank it had to kill.
inline constexpr int kKilledAtDeadline = -1000;

// Starts this binary again as `<binary> --rank_role <args...>`. Returns the
// child's pid, or -1 when fork fails.
inline pid_t SpawnSelf(const std::vector<std::string>& args) {
  std::vector<std::string> all = {"/proc/self/exe", kRankRoleFlag};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    execv("/proc/self/exe", argv.data());
    std::perror("execv /proc/self/exe");
    _exit(127);
  }
  return pid;
}

// Waits for every pid until `timeout` has passed, then kills those still
// running. Returns, per pid, its exit status, -signal when a signal ended
// it, or kKilledAtDeadline.
inline std::vector<int> WaitForRanks(const std::vector<pid_t>& pids,
                                     std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<int> codes(pids.size(), kKilledAtDeadline);
  std::vector<bool> done(pids.size(), false);
  size_t remaining = pids.size();
  while (remaining > 0 && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      int status = 0;
      if (pids[i] <= 0) {
        done[i] = true;
        --remaining;
        continue;
      }
      if (waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        codes[i] = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        done[i] = true;
        --remaining;
      }
    }
    if (remaining > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (size_t i = 0; i < pids.size(); ++i) {
    if (done[i]) continue;
    kill(pids[i], SIGKILL);
    int status = 0;
    waitpid(pids[i], &status, 0);
  }
  return codes;
}

}  // namespace mpt::testing

#endif  // MPT_TESTS_RANK_PROCESSES_H_
