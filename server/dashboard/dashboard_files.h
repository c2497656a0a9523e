// The dashboard's files (index.html, app.js, app.css), compiled into the
// coordinator by the genrule in server/dashboard/BUILD.bazel.
#ifndef MPT_SERVER_DASHBOARD_DASHBOARD_FILES_H_
#define MPT_SERVER_DASHBOARD_DASHBOARD_FILES_H_

#include <cstddef>

namespace mpt {

struct EmbeddedFile {
  const char* name;  // the base name, "app.js"
  const char* data;  // `size` bytes (followed by a NUL not counted)
  size_t size;
};

extern const EmbeddedFile kDashboardFiles[];
extern const int kDashboardFileCount;

}  // namespace mpt

#endif  // MPT_SERVER_DASHBOARD_DASHBOARD_FILES_H_
