// JobEventNotifier: listeners are called on its thread once after they
// register and after each notification of their job (coalesced while they
// wait, repeated when notified during a call); Remove() waits for a call in
// progress, except from inside that call.
#include "server/job_event_notifier.h"

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

// Counts its calls; a call can be held until released.
class CountingListener : public JobEventListener {
 public:
  void OnJobEvents() override {
    {
      absl::MutexLock lock(&mu_);
      ++calls_;
      in_call_ = true;
    }
    if (hold_) {
      entered_.Notify();
      release_.WaitForNotification();
    }
    if (on_call_) on_call_();
    absl::MutexLock lock(&mu_);
    in_call_ = false;
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  bool in_call() {
    absl::MutexLock lock(&mu_);
    return in_call_;
  }
  // Waits until at least `n` calls happened.
  bool AwaitCalls(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(10));
  }

  std::atomic<bool> hold_{false};
  absl::Notification entered_;
  absl::Notification release_;
  std::function<void()> on_call_;

 private:
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  bool in_call_ ABSL_GUARDED_BY(mu_) = false;
};

TEST(JobEventNotifierTest, CallsOnceAfterAddAndAfterEachNotification) {
  JobEventNotifier notifier;
  CountingListener a, b;
  notifier.Add("jobs/a", &a);
  notifier.Add("jobs/b", &b);
  ASSERT_TRUE(a.AwaitCalls(1));
  ASSERT_TRUE(b.AwaitCalls(1));
  EXPECT_EQ(notifier.size(), 2);

  notifier.Notify("jobs/a");
  ASSERT_TRUE(a.AwaitCalls(2));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(b.calls(), 1);  // another job's listener is not called
  notifier.Notify("jobs/none");
  notifier.Wake(&b);
  ASSERT_TRUE(b.AwaitCalls(2));
  notifier.NotifyAll();
  ASSERT_TRUE(a.AwaitCalls(3));
  ASSERT_TRUE(b.AwaitCalls(3));
  notifier.Remove("jobs/a", &a);
  notifier.Remove("jobs/b", &b);
  EXPECT_EQ(notifier.size(), 0);
  notifier.Wake(&a);  // not registered: nothing
  notifier.Notify("jobs/a");
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(a.calls(), 3);
}

TEST(JobEventNotifierTest, CoalescesWhileWaitingAndRepeatsWhenNotifiedDuringACall) {
  JobEventNotifier notifier;
  CountingListener a;
  a.hold_ = true;
  notifier.Add("jobs/a", &a);
  a.entered_.WaitForNotification();  // first call running, held
  for (int i = 0; i < 5; ++i) notifier.Notify("jobs/a");
  a.hold_ = false;
  a.release_.Notify();
  ASSERT_TRUE(a.AwaitCalls(2));  // the five notifications during the call: one more
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(a.calls(), 2);
  notifier.Remove("jobs/a", &a);
}

TEST(JobEventNotifierTest, RemoveWaitsForACallInProgress) {
  JobEventNotifier notifier;
  CountingListener a;
  a.hold_ = true;
  notifier.Add("jobs/a", &a);
  a.entered_.WaitForNotification();
  std::atomic<bool> removed{false};
  std::thread remover([&] {
    notifier.Remove("jobs/a", &a);
    removed = true;
  });
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(removed.load()) << "Remove returned while the listener was being called";
  a.release_.Notify();
  remover.join();
  EXPECT_TRUE(removed.load());
  EXPECT_FALSE(a.in_call());
}

TEST(JobEventNotifierTest, RemoveFromInsideTheCallDoesNotWaitForItself) {
  JobEventNotifier notifier;
  CountingListener a;
  a.on_call_ = [&] { notifier.Remove("jobs/a", &a); };
  notifier.Add("jobs/a", &a);
  ASSERT_TRUE(a.AwaitCalls(1));
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (notifier.size() != 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(notifier.size(), 0);
  notifier.Notify("jobs/a");
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(a.calls(), 1);
}

}  // namespace
}  // namespace mpt
