#!/usr/bin/env bash
# What can be checked of deploy/docker/Dockerfile without a container
# runtime or an image registry: every shared library that the coordinator,
# the worker and mptctl load (ldd) comes from a Debian package that the
# runtime stage's `apt-get install` line brings in, with its dependencies
# (apt-cache depends --recurse), or that every Debian image has (priority
# "required"); every package on that line exists in the archive; and the
# stages use this machine's Debian release. As a check of the check, the
# line without libgrpc++1.51 must come up short.
#
# Skips itself (passes, printing SKIPPED) where it cannot tell: not a Debian
# of the Dockerfile's release, no apt lists, or binaries built against a
# libtorch from outside Debian (MPT_LIBTORCH).
set -euo pipefail

skip() { echo "SKIPPED: $*" >&2; exit 0; }
root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
dockerfile="$root/deploy/docker/Dockerfile"
binaries=("$root/server/coordinator" "$root/worker/worker" "$root/cli/mptctl")

command -v dpkg-query >/dev/null && command -v apt-cache >/dev/null || skip "not a Debian system"
release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
images=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$dockerfile" | sort -u | tr '\n' ' ')
for image in $images; do
  case "$image" in
    "debian:$release"|"debian:$release-slim") ;;
    *) skip "the Dockerfile's image $image is not this machine's Debian ($release)" ;;
  esac
done
compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || skip "no apt package lists (run apt-get update)"

# The runtime stage: the packages after the last FROM's apt-get install.
runtime=$(awk '/^FROM /{buf=""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$dockerfile" |
          sed ':a;/\\$/{N;s/\\\n//;ba}' | grep 'apt-get install' |
          sed 's/.*--no-install-recommends//; s/&&.*//' | tr -s ' ' '\n' | grep -v '^$' | sort -u)
[ -n "$runtime" ] || { echo "FAIL: no apt-get install line in the runtime stage of $dockerfile" >&2; exit 1; }
known=$(apt-cache show $runtime 2>/dev/null | sed -n 's/^Package: //p' | sort -u)
unknown=$(comm -23 <(echo "$runtime") <(echo "$known"))
[ -z "$unknown" ] || { echo "FAIL: the Dockerfile installs packages apt does not know:" $unknown >&2; exit 1; }

# The packages the binaries' libraries come from.
libs=$(for b in "${binaries[@]}"; do ldd "$b"; done | awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u)
[ -n "$libs" ] || { echo "FAIL: ldd found no libraries" >&2; exit 1; }
# One dpkg-query for all of them: each library under its own path, its
# real path, and its /usr path (dpkg records merged-/usr files under one).
candidates() {
  local lib
  for lib in $libs; do
    echo "$lib"
    realpath "$lib"
    case "$lib" in /lib/*|/lib64/*) echo "/usr$lib" ;; esac
  done
}
owned=$(dpkg-query -S $(candidates | sort -u) 2>/dev/null || true)
owners=""
for lib in $libs; do
  real=$(realpath "$lib")
  line=$(awk -v a="$lib" -v b="$real" -v c="/usr$lib" -F': ' '$2 == a || $2 == b || $2 == c {print $1; exit}' <<< "$owned")
  [ -n "$line" ] || skip "$lib belongs to no Debian package (a libtorch from elsewhere?)"
  owners="$owners ${line//,/ }"
done
owners=$(tr ' ' '\n' <<< "$owners" | sed 's/:amd64$//' | grep -v '^$' | sort -u)

required=$(dpkg-query -W -f='${Package} ${Priority}\n' | awk '$2 == "required" {print $1}' | sort -u)
closure() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$@" 2>/dev/null | grep -v '^ ' | sed 's/:amd64$//' | sort -u
}
missing() {  # packages the binaries need that the given install line does not bring
  comm -23 <(echo "$owners") <(printf '%s\n%s\n' "$(closure "$@")" "$required" | sort -u)
}

gap=$(missing $runtime)
if [ -n "$gap" ]; then
  echo "FAIL: the runtime stage of $dockerfile lacks what these binaries load from:" $gap >&2
  exit 1
fi
without=$(missing $(grep -vx 'libgrpc++1.51' <<< "$runtime"))
grep -qx 'libgrpc++1.51' <<< "$without" ||
  { echo "FAIL: the check did not notice a missing libgrpc++1.51" >&2; exit 1; }
echo "PASSED: $(wc -l <<< "$libs") libraries from $(wc -l <<< "$owners") packages, all brought in by" \
     "the runtime stage's $(wc -w <<< "$runtime") packages (or in every Debian image)"
