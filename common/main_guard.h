// The outermost frame of every program of this project.
//
//   int main(int argc, char** argv) {
//     return mpt::RunMain(argc, argv, [](int argc, char** argv) { ... });
//   }
//
// Library code reports errors as absl::Status and does not throw across its
// boundary; RunMain is the last line of defence for what a dependency throws
// anyway (std::bad_alloc, a std::filesystem or nlohmann::json exception, a
// c10::Error from libtorch): it prints "<program>: internal error: <what>"
// on stderr and returns kExitInternalError instead of letting the program
// abort with a core dump.
#ifndef MPT_COMMON_MAIN_GUARD_H_
#define MPT_COMMON_MAIN_GUARD_H_

#include <functional>

#include "absl/status/status.h"

namespace mpt {

// The exit code of a program that stopped on an unexpected exception
// (EX_SOFTWARE in sysexits.h).
inline constexpr int kExitInternalError = 70;

// Runs `body(argc, argv)` and returns its exit code, or kExitInternalError
// after printing the message of any exception it throws.
int RunMain(int argc, char** argv, const std::function<int(int, char**)>& body);

// RunMain around the body of a program whose work is one function: parses
// the command line's flags (absl), runs `work`, and returns 0, or prints
// "<program>: <message>" on stderr and returns 1 when it fails.
int RunFlagsMain(int argc, char** argv, const std::function<absl::Status()>& work);

}  // namespace mpt

#endif  // MPT_COMMON_MAIN_GUARD_H_
