// Debian's libgloo-dev (0.0~git20220518) installs gloo/transport/tcp/pair.h
// but not the gloo/common/memory.h it includes. GlooCommunicator::Abort()
// needs pair.h for one call into libgloo (Pair::signalExceptionExternal),
// so this header declares the three pointer wrappers pair.h names, with
// the interface and the single-smart-pointer layout libgloo was built with:
// a root that hands out weak references, weak references, and the strong
// references made from them while the object is alive. Only the
// declarations matter here; nothing in this project uses the wrappers.
#ifndef MPT_WORKER_COLLECTIVES_GLOO_COMPAT_GLOO_COMMON_MEMORY_H_
#define MPT_WORKER_COLLECTIVES_GLOO_COMPAT_GLOO_COMMON_MEMORY_H_

#include <memory>
#include <thread>

namespace gloo {

template <typename T>
class WeakNonOwningPtr;

// The root reference. Its destructor waits until no strong reference made
// from its weak ones is left.
template <typename T>
class ShareableNonOwningPtr final {
 public:
  explicit ShareableNonOwningPtr(T* object) : root_(object, [](T*) {}) {}
  ShareableNonOwningPtr(const ShareableNonOwningPtr&) = delete;
  ShareableNonOwningPtr& operator=(const ShareableNonOwningPtr&) = delete;
  ~ShareableNonOwningPtr() {
    std::weak_ptr<T> watch = root_;
    root_.reset();
    while (!watch.expired()) std::this_thread::yield();
  }

 private:
  std::shared_ptr<T> root_;
  friend class WeakNonOwningPtr<T>;
};

// A strong reference, empty once the object is going away.
template <typename T>
class NonOwningPtr final {
 public:
  NonOwningPtr() = default;
  explicit NonOwningPtr(const WeakNonOwningPtr<T>& weak) : strong_(weak.weak_.lock()) {}
  T* operator->() const noexcept { return strong_.get(); }
  explicit operator bool() const noexcept { return strong_ != nullptr; }

 private:
  std::shared_ptr<T> strong_;
};

// A weak reference handed out by the root.
template <typename T>
class WeakNonOwningPtr final {
 public:
  WeakNonOwningPtr() = default;
  explicit WeakNonOwningPtr(const ShareableNonOwningPtr<T>& root) : weak_(root.root_) {}
  // True when made from a root (whether or not the object still lives).
  explicit operator bool() const noexcept {
    const std::weak_ptr<T> empty;
    return weak_.owner_before(empty) || empty.owner_before(weak_);
  }

 private:
  std::weak_ptr<T> weak_;
  friend class NonOwningPtr<T>;
};

}  // namespace gloo

#endif  // MPT_WORKER_COLLECTIVES_GLOO_COMPAT_GLOO_COMMON_MEMORY_H_
