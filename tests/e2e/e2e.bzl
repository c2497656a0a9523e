"""The one definition of an end-to-end shell test."""

def e2e_test(name, size = "large", timeout = "moderate", tags = [], data = []):
    """A shell test `<name>.sh` over real coordinator, worker and mptctl processes.

    The script sources e2e_lib.sh (which starts and stops the processes) and
    gets every binary and fixture through :e2e_deps.

    Args:
      name: the test; its script is `<name>.sh` in this package.
      size: Bazel test size.
      timeout: Bazel test timeout.
      tags: extra tags; "e2e" is always added.
      data: files the script needs besides :e2e_deps.
    """
    native.sh_test(
        name = name,
        size = size,
        timeout = timeout,
        srcs = [name + ".sh"],
        data = [":e2e_deps"] + data,
        tags = ["e2e"] + tags,
    )
