// A file that fuzz targets write each input to, for readers that take a
// path. It lives in memory (memfd) and is reached through /proc/self/fd, so
// the readers see a regular file and no disk is touched.
#ifndef MPT_TOOLS_FUZZ_FUZZ_FILE_H_
#define MPT_TOOLS_FUZZ_FUZZ_FILE_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace mpt {

class FuzzFile {
 public:
  FuzzFile() {
    fd_ = memfd_create("fuzz_input", 0);
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  // Replaces the contents with `size` bytes at `data`; returns the path.
  const std::string& Write(const uint8_t* data, size_t size) {
    if (ftruncate(fd_, 0) != 0) std::abort();
    size_t done = 0;
    while (done < size) {
      ssize_t n = pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace mpt

#endif  // MPT_TOOLS_FUZZ_FUZZ_FILE_H_
