// GlooCommunicator between real processes (and threads) over TCP on
// 127.0.0.1, the rendezvous stores, and the communicator factory.
//
// The multi-process tests start this binary again once per rank (see
// rank_processes.h); each rank checks its own results and reports through
// its exit code, printing what went wrong to stderr.
#include "worker/collectives/gloo_communicator.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/rank_processes.h"
#include "tests/test_util.h"
#include "worker/collectives/communicator_factory.h"
#include "worker/collectives/rendezvous_store.h"

namespace mpt {
namespace {

using mpt::testing::FreshTempDir;
using mpt::testing::SpawnSelf;
using mpt::testing::WaitForRanks;

constexpr auto kRankDeadline = std::chrono::seconds(120);

GlooOptions LoopbackOptions(absl::Duration timeout = absl::Seconds(60)) {
  GlooOptions o;
  o.hostname = "127.0.0.1";
  o.timeout = timeout;
  return o;
}

// ---------------------------------------------------------------------------
// What each rank does. Every role returns its exit code: 0 when all its
// checks passed.

// Fails the role with a message on stderr.
#define ROLE_EXPECT(cond, what)                                                     \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::cerr << "rank " << rank << ": " << __LINE__ << ": " << what << std::endl; \
      return 1;                                                                     \
    }                                                                               \
  } while (0)

// The collective results every rank must see, for any world size. Used by
// the process and the thread tests alike.
int CheckCollectives(Communicator& comm) {
  const int rank = comm.rank();
  const int world = comm.world_size();
  const double sum_of_ranks = world * (world - 1) / 2.0;

  // A non-contiguous float view (a transpose), a double vector and a second
  // float tensor: packed together by dtype, written back in place.
  at::Tensor base = at::arange(12, at::kFloat).view({3, 4}) + rank;
  at::Tensor transposed = base.t();
  at::Tensor doubles = at::full({5}, 0.5 * (rank + 1), at::kDouble);
  at::Tensor small = at::ones({2, 2}, at::kFloat) * (rank + 1);
  std::vector<at::Tensor> tensors = {transposed, doubles, small};
  absl::Status s = comm.AllReduceSum(tensors);
  ROLE_EXPECT(s.ok(), "all-reduce: " << s);
  at::Tensor expected_base = at::arange(12, at::kFloat).view({3, 4}) * world + sum_of_ranks;
  ROLE_EXPECT(at::equal(base, expected_base), "transposed view not reduced in place: " << base);
  ROLE_EXPECT(tensors[0].data_ptr() == transposed.data_ptr(), "the view was replaced");
  ROLE_EXPECT(at::allclose(doubles, at::full({5}, 0.5 * (sum_of_ranks + world), at::kDouble)),
              "doubles: " << doubles);
  ROLE_EXPECT(at::equal(small, at::full({2, 2}, sum_of_ranks + world, at::kFloat)),
              "small: " << small);

  // One contiguous tensor: reduced in its own storage, no copy.
  at::Tensor single = at::full({1000}, static_cast<double>(rank), at::kDouble);
  std::vector<at::Tensor> one = {single};
  s = comm.AllReduceSum(one);
  ROLE_EXPECT(s.ok(), "all-reduce of one tensor: " << s);
  ROLE_EXPECT(at::equal(single, at::full({1000}, sum_of_ranks, at::kDouble)), "single");

  // Broadcast from the last rank into a strided slice; the elements outside
  // the slice stay as they were.
  const int root = world - 1;
  at::Tensor big = at::full({4, 6}, -1.0f, at::kFloat);
  at::Tensor every_other = big.slice(1, 0, 6, 2);  // [4, 3], stride 2
  every_other.copy_(at::arange(12, at::kFloat).view({4, 3}) + 100 * rank);
  at::Tensor dvec = at::full({3}, static_cast<double>(rank), at::kDouble);
  std::vector<at::Tensor> bcast = {every_other, dvec};
  s = comm.Broadcast(bcast, root);
  ROLE_EXPECT(s.ok(), "broadcast: " << s);
  ROLE_EXPECT(at::equal(every_other, at::arange(12, at::kFloat).view({4, 3}) + 100 * root),
              "broadcast slice: " << every_other);
  ROLE_EXPECT(at::equal(big.slice(1, 1, 6, 2), at::full({4, 3}, -1.0f, at::kFloat)),
              "broadcast wrote outside the slice: " << big);
  ROLE_EXPECT(at::equal(dvec, at::full({3}, static_cast<double>(root), at::kDouble)),
              "broadcast doubles: " << dvec);

  // Parameters that require gradients can be broadcast too.
  at::Tensor param = at::full({2}, static_cast<float>(rank), at::kFloat).set_requires_grad(true);
  std::vector<at::Tensor> params = {param};
  s = comm.Broadcast(params, 0);
  ROLE_EXPECT(s.ok(), "broadcast of a parameter: " << s);
  ROLE_EXPECT(at::equal(param.detach(), at::zeros({2}, at::kFloat)), "param: " << param);
  return 0;
}

absl::StatusOr<std::unique_ptr<Communicator>> Join(int rank, int world, const std::string& dir,
                                                   absl::Duration timeout) {
  FileRendezvousStore store(dir);
  return GlooCommunicator::Create(rank, world, &store, LoopbackOptions(timeout));
}

// --rank_role collectives <rank> <world> <store dir>
int RoleCollectives(int rank, int world, const std::string& dir) {
  auto comm = Join(rank, world, dir, absl::Seconds(60));
  ROLE_EXPECT(comm.ok(), "create: " << comm.status());
  return CheckCollectives(**comm);
}

// --rank_role survivor <rank> <world> <store dir>: one good all-reduce, then
// rank 1 disappears (dies or hangs); the next all-reduce must fail with
// UNAVAILABLE well before the test's deadline, and so must every later call.
int RoleSurvivor(int rank, int world, const std::string& dir, absl::Duration timeout) {
  auto comm = Join(rank, world, dir, timeout);
  ROLE_EXPECT(comm.ok(), "create: " << comm.status());
  std::vector<at::Tensor> t = {at::ones({4}, at::kFloat)};
  absl::Status s = (*comm)->AllReduceSum(t);
  ROLE_EXPECT(s.ok(), "first all-reduce: " << s);
  // Give a dying peer time to be gone, so that this rank writes into a
  // closed connection (several segments: 4 MiB of floats).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  t = {at::ones({1 << 20}, at::kFloat)};
  const auto start = std::chrono::steady_clock::now();
  s = (*comm)->AllReduceSum(t);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << "rank " << rank << ": after the peer left: " << s << " (" << seconds << " s)"
            << std::endl;
  ROLE_EXPECT(s.code() == absl::StatusCode::kUnavailable, "expected UNAVAILABLE: " << s);
  ROLE_EXPECT(seconds < absl::ToDoubleSeconds(timeout) + 10, "took " << seconds << " s");
  absl::Status again = (*comm)->Broadcast(t, 0);
  ROLE_EXPECT(again == s, "a broken group must keep returning its error: " << again);
  return 0;
}

// --rank_role dies <rank> <world> <store dir>: joins, takes part in one
// all-reduce, then exits without closing anything.
int RoleDies(int rank, int world, const std::string& dir) {
  auto comm = Join(rank, world, dir, absl::Seconds(60));
  ROLE_EXPECT(comm.ok(), "create: " << comm.status());
  std::vector<at::Tensor> t = {at::ones({4}, at::kFloat)};
  absl::Status s = (*comm)->AllReduceSum(t);
  ROLE_EXPECT(s.ok(), "first all-reduce: " << s);
  _exit(3);
}

// --rank_role hangs <rank> <world> <store dir>: as `dies`, but stays alive
// without calling the next collective (a peer stuck in a long computation).
int RoleHangs(int rank, int world, const std::string& dir) {
  auto comm = Join(rank, world, dir, absl::Seconds(60));
  ROLE_EXPECT(comm.ok(), "create: " << comm.status());
  std::vector<at::Tensor> t = {at::ones({4}, at::kFloat)};
  absl::Status s = (*comm)->AllReduceSum(t);
  ROLE_EXPECT(s.ok(), "first all-reduce: " << s);
  std::this_thread::sleep_for(std::chrono::seconds(60));
  return 4;
}

int RunRole(int argc, char** argv) {
  // argv: binary --rank_role <role> <rank> <world> <dir>
  if (argc != 6) {
    std::cerr << "usage: --rank_role <role> <rank> <world> <store dir>" << std::endl;
    return 2;
  }
  const std::string role = argv[2];
  const int rank = std::atoi(argv[3]);
  const int world = std::atoi(argv[4]);
  const std::string dir = argv[5];
  if (role == "collectives") return RoleCollectives(rank, world, dir);
  if (role == "survivor_of_death") return RoleSurvivor(rank, world, dir, absl::Seconds(60));
  if (role == "survivor_of_hang") return RoleSurvivor(rank, world, dir, absl::Seconds(3));
  if (role == "dies") return RoleDies(rank, world, dir);
  if (role == "hangs") return RoleHangs(rank, world, dir);
  std::cerr << "unknown role " << role << std::endl;
  return 2;
}

// ---------------------------------------------------------------------------
// Separate processes.

std::vector<int> RunRanks(const std::vector<std::string>& roles, const std::string& dir) {
  std::vector<pid_t> pids;
  const int world = static_cast<int>(roles.size());
  for (int r = 0; r < world; ++r) {
    pids.push_back(SpawnSelf({roles[r], std::to_string(r), std::to_string(world), dir}));
  }
  return WaitForRanks(pids, kRankDeadline);
}

class GlooProcesses : public ::testing::TestWithParam<int> {};

TEST_P(GlooProcesses, AllReduceAndBroadcastFloatAndDoubleNonContiguous) {
  const int world = GetParam();
  const std::string dir = FreshTempDir(absl::StrCat("collectives_", world));
  std::vector<int> codes = RunRanks(std::vector<std::string>(world, "collectives"), dir);
  for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, GlooProcesses, ::testing::Values(2, 3));

TEST(GlooProcessesFailure, APeerThatDiesGivesUnavailableNotAHang) {
  const std::string dir = FreshTempDir("peer_dies");
  const auto start = std::chrono::steady_clock::now();
  std::vector<int> codes = RunRanks({"survivor_of_death", "dies"}, dir);
  EXPECT_EQ(codes[0], 0) << "the surviving rank";
  EXPECT_EQ(codes[1], 3) << "the rank that dies";
  // A closed connection is noticed at once, long before the 60 s timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST(GlooProcessesFailure, APeerThatHangsGivesUnavailableAfterTheTimeout) {
  const std::string dir = FreshTempDir("peer_hangs");
  std::vector<pid_t> pids = {SpawnSelf({"survivor_of_hang", "0", "2", dir}),
                             SpawnSelf({"hangs", "1", "2", dir})};
  std::vector<int> survivor = WaitForRanks({pids[0]}, kRankDeadline);
  EXPECT_EQ(survivor[0], 0) << "rank 0 must time out with UNAVAILABLE (3 s timeout)";
  std::vector<int> hung = WaitForRanks({pids[1]}, std::chrono::milliseconds(0));
  EXPECT_EQ(hung[0], mpt::testing::kKilledAtDeadline) << "rank 1 was meant to still hang";
}

// ---------------------------------------------------------------------------
// Threads of one process (one store object shared in memory).

TEST(GlooThreads, ThreeRanksInOneProcess) {
  constexpr int kWorld = 3;
  InMemoryRendezvousStore store;
  std::vector<int> codes(kWorld, -1);
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] {
      GlooOptions o = LoopbackOptions();
      o.key_prefix = "threads/";
      auto comm = GlooCommunicator::Create(r, kWorld, &store, o);
      if (!comm.ok()) {
        std::cerr << "rank " << r << ": " << comm.status() << std::endl;
        codes[r] = 1;
        return;
      }
      codes[r] = CheckCollectives(**comm);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

// A collective blocked on a peer that never calls it (a frozen process)
// returns ABORTED soon after Abort() from another thread, long before its
// 60 s timeout; later calls fail at once; the peer sees its connection
// close.
TEST(GlooThreads, AbortBreaksABlockedCollectiveAtOnce) {
  InMemoryRendezvousStore store;
  std::unique_ptr<Communicator> comms[2];
  std::thread joiner([&] {
    GlooOptions o = LoopbackOptions();
    o.key_prefix = "abort/";
    auto c = GlooCommunicator::Create(1, 2, &store, o);
    ASSERT_TRUE(c.ok()) << c.status();
    comms[1] = *std::move(c);
  });
  GlooOptions o = LoopbackOptions();
  o.key_prefix = "abort/";
  auto c0 = GlooCommunicator::Create(0, 2, &store, o);
  joiner.join();
  ASSERT_TRUE(c0.ok()) << c0.status();
  ASSERT_NE(comms[1], nullptr);
  comms[0] = *std::move(c0);

  std::atomic<bool> returned{false};
  absl::Status blocked;
  const auto start = std::chrono::steady_clock::now();
  std::thread waiter([&] {
    std::vector<at::Tensor> t = {at::ones({1000}, at::kFloat)};
    blocked = comms[0]->AllReduceSum(t);
    returned.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(returned.load()) << "rank 0 must wait for rank 1";
  const auto abort_at = std::chrono::steady_clock::now();
  comms[0]->Abort();
  waiter.join();
  const auto waited = std::chrono::steady_clock::now() - abort_at;
  EXPECT_EQ(blocked.code(), absl::StatusCode::kAborted) << blocked;
  EXPECT_LT(waited, std::chrono::seconds(2));
  std::cerr << "all-reduce returned "
            << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
            << " ms after Abort()" << std::endl;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));

  std::vector<at::Tensor> again = {at::ones({4}, at::kFloat)};
  EXPECT_EQ(comms[0]->AllReduceSum(again).code(), absl::StatusCode::kAborted);
  comms[0]->Abort();  // a second call does nothing more
  // The peer's connection was closed: it fails instead of waiting 60 s.
  const auto peer_start = std::chrono::steady_clock::now();
  absl::Status peer = comms[1]->AllReduceSum(again);
  EXPECT_EQ(peer.code(), absl::StatusCode::kUnavailable) << peer;
  EXPECT_LT(std::chrono::steady_clock::now() - peer_start, std::chrono::seconds(10));
}

// ---------------------------------------------------------------------------
// Group formation and argument errors, in this process.

TEST(GlooCreate, ARankThatNeverArrivesIsADeadlineNotAHang) {
  FileRendezvousStore store(FreshTempDir("never_arrives"));
  const auto start = std::chrono::steady_clock::now();
  auto comm = GlooCommunicator::Create(0, 2, &store, LoopbackOptions(absl::Seconds(1)));
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_NE(comm.status().message().find("rank 0 of 2"), std::string::npos) << comm.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
}

TEST(GlooCreate, RejectsBadArguments) {
  InMemoryRendezvousStore store;
  EXPECT_EQ(GlooCommunicator::Create(2, 2, &store, LoopbackOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GlooCommunicator::Create(0, 0, &store, LoopbackOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GlooCommunicator::Create(0, 1, nullptr, LoopbackOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GlooCommunicator::Create(0, 1, &store, LoopbackOptions(absl::ZeroDuration()))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  GlooOptions bad_interface = LoopbackOptions();
  bad_interface.interface = "no-such-interface0";
  auto comm = GlooCommunicator::Create(0, 1, &store, bad_interface);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument) << comm.status();
  EXPECT_NE(comm.status().message().find("no-such-interface0"), std::string::npos);
}

TEST(GlooWorldOfOne, CollectivesKeepTheValuesAndCheckTheirArguments) {
  InMemoryRendezvousStore store;
  auto comm = GlooCommunicator::Create(0, 1, &store, LoopbackOptions());
  ASSERT_TRUE(comm.ok()) << comm.status();
  at::Tensor t = at::arange(6, at::kFloat).view({2, 3});
  std::vector<at::Tensor> v = {t.t()};
  ASSERT_TRUE((*comm)->AllReduceSum(v).ok());
  EXPECT_TRUE(at::equal(t, at::arange(6, at::kFloat).view({2, 3})));

  std::vector<at::Tensor> ints = {at::ones({2}, at::kLong)};
  absl::Status s = (*comm)->AllReduceSum(ints);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("Long"), std::string::npos) << s;
  std::vector<at::Tensor> undefined = {at::Tensor()};
  EXPECT_EQ((*comm)->AllReduceSum(undefined).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*comm)->Broadcast(v, 1).code(), absl::StatusCode::kInvalidArgument);
  // Argument errors do not break the group.
  EXPECT_TRUE((*comm)->AllReduceSum(v).ok());
  std::vector<at::Tensor> none;
  EXPECT_TRUE((*comm)->AllReduceSum(none).ok());
}

// ---------------------------------------------------------------------------
// The factory.

TEST(CommunicatorFactory, MakesEachKindOrSaysWhyNot) {
  InMemoryRendezvousStore store;
  CommunicatorOptions options;
  options.timeout = absl::Seconds(30);
  auto local = MakeCommunicator("local", 0, 1, nullptr, options);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ((*local)->world_size(), 1);
  EXPECT_EQ(MakeCommunicator("local", 0, 2, nullptr, options).status().code(),
            absl::StatusCode::kInvalidArgument);

  auto gloo = MakeCommunicator("gloo", 0, 1, &store, options);
  ASSERT_TRUE(gloo.ok()) << gloo.status();
  EXPECT_NE(dynamic_cast<GlooCommunicator*>(gloo->get()), nullptr);

  auto unknown = MakeCommunicator("mpi", 0, 1, &store, options);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("\"mpi\""), std::string::npos);

  auto nccl = MakeCommunicator("nccl", 0, 1, &store, options);
  if (!NcclAvailable()) {
    EXPECT_EQ(nccl.status().code(), absl::StatusCode::kUnimplemented) << nccl.status();
    EXPECT_NE(nccl.status().message().find("MPT_LIBTORCH"), std::string::npos);
  } else if (nccl.ok()) {
    EXPECT_EQ((*nccl)->world_size(), 1);  // a CUDA build on a machine with a GPU
  } else {
    // A CUDA build without a usable GPU: an error status, not a crash.
    std::cout << "nccl here: " << nccl.status() << std::endl;
    EXPECT_NE(nccl.status().code(), absl::StatusCode::kUnimplemented);
  }
}

// ---------------------------------------------------------------------------
// The rendezvous stores.

TEST(FileRendezvousStore, StoresAnyBytesUnderAnyKey) {
  FileRendezvousStore store(FreshTempDir("file_store") + "/sub");  // created on Set
  const std::string bytes("a\0b\xff/", 5);
  ASSERT_TRUE(store.Set("group/7 key:\xc3\xa9", bytes).ok());
  ASSERT_TRUE(store.Set("empty", "").ok());
  ASSERT_TRUE(store.Set("empty", "replaced").ok());
  auto values = store.Get({"group/7 key:\xc3\xa9", "empty"}, absl::Seconds(1));
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ((*values)[0], bytes);
  EXPECT_EQ((*values)[1], "replaced");
  // "group/7" must not collide with a look-alike key.
  auto other = store.Get({"group%2F7 key:\xc3\xa9"}, absl::Milliseconds(50));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(FileRendezvousStore, GetWaitsForLaterSetsAndNamesMissingKeys) {
  FileRendezvousStore store(FreshTempDir("file_store_wait"));
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(store.Set("late", "here").ok());
  });
  auto values = store.Get({"late"}, absl::Seconds(10));
  late.join();
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ((*values)[0], "here");
  auto missing = store.Get({"late", "never"}, absl::Milliseconds(100));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(missing.status().message().find("never"), std::string::npos);
  EXPECT_EQ(missing.status().message().find("late"), std::string::npos) << missing.status();
}

TEST(InMemoryRendezvousStore, GetWaitsForLaterSetsAndTimesOut) {
  InMemoryRendezvousStore store;
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(store.Set("a", "1").ok());
    ASSERT_TRUE(store.Set("b", "2").ok());
  });
  auto values = store.Get({"b", "a"}, absl::Seconds(10));
  late.join();
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, (std::vector<std::string>{"2", "1"}));
  EXPECT_EQ(store.Get({"c"}, absl::Milliseconds(20)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace mpt

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == mpt::testing::kRankRoleFlag) {
    return mpt::RunRole(argc, argv);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
