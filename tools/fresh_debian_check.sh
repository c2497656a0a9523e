#!/usr/bin/env bash
# README's two commands on a fresh Debian 12, made here: debootstrap writes
# a minimal bookworm root (with the updates and security suites a real
# install has), git, ca-certificates and sudo are added (what a user needs
# to clone), the repository's committed HEAD is cloned into it, and
# README's first command (tools/run_demo.sh) runs inside it with chroot;
# with --tests the second (tools/run_tests.sh) runs after it. Nothing from
# this machine's packages, caches or virtual environments is visible in
# there: setup.sh has to install everything.
#
#   sudo tools/fresh_debian_check.sh [--dir DIR] [--tests] [--keep]
#         [--mirror URL] [--host_ca]
#
# Needs root, debootstrap (Debian's package), the Debian mirror, and about
# 15 GiB under DIR (default /var/tmp/mpt-fresh-debian). Each command's log
# is DIR/<command>.log; the last lines say its exit status and wall time.
# The chroot shares this machine's kernel, network and /dev; it gets the
# /etc/hosts an installed system has, the root is bind-mounted on itself
# (as / is a mount point on a real machine), and
# /proc, /sys, /dev/pts and a tmpfs /tmp are mounted for the run and
# unmounted after; a policy-rc.d keeps package installs from starting
# daemons.
#
# --keep leaves the root in place for a second run, which then skips
# debootstrap and the clone and builds from the root's own caches.
# --host_ca copies the certificate authorities added to this machine
# (/usr/local/share/ca-certificates) into the root and points pip at the
# system bundle, for networks whose TLS goes through an inspecting proxy
# (without it PyPI fails there, and setup.sh says which test will skip).
#
# Not part of CI: a cold run takes 30 to 60 minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=/var/tmp/mpt-fresh-debian
tests=0
keep=0
mirror=http://deb.debian.org/debian
host_ca=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --tests) tests=1; shift ;;
    --keep) keep=1; shift ;;
    --mirror) mirror="$2"; shift 2 ;;
    --host_ca) host_ca=1; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "fresh_debian_check: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "fresh_debian_check: needs root (debootstrap and chroot)" >&2
  exit 2
fi
command -v debootstrap >/dev/null || {
  echo "fresh_debian_check: debootstrap is missing: apt-get install debootstrap" >&2
  exit 2
}

root=$dir/root
mkdir -p "$dir"
mounted=()
# Processes running in the root (Bazel's server, a stray daemon), left by
# the commands or by an earlier run: they hold the mounts, and a Bazel
# server started under other mounts cannot serve this run.
stop_root_processes() {
  for p in /proc/[0-9]*; do
    if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ]; then kill -9 "${p#/proc/}" 2>/dev/null || true; fi
  done
  sleep 1
}
cleanup() {
  stop_root_processes
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  # The repository is bind-mounted on the same file system: delete the root
  # only when nothing is mounted under it any more.
  if [ "$keep" = 0 ]; then
    if awk -v r="$root/" 'index($2 "/", r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
      echo "fresh_debian_check: something is still mounted under $root; left in place" >&2
    else
      rm -rf --one-file-system "$root"
    fi
  fi
}
trap cleanup EXIT

stop_root_processes
if [ ! -x "$root/bin/bash" ]; then
  echo "=== debootstrap bookworm into $root"
  debootstrap --variant=minbase bookworm "$root" "$mirror" > "$dir/debootstrap.log" 2>&1 || {
    echo "fresh_debian_check: debootstrap failed; see $dir/debootstrap.log" >&2
    exit 1
  }
fi
# The root bind-mounted on itself: a mount point, as / is on a real
# machine (`ip netns exec` remounts / as a slave), and a view of it
# without anything mounted under it before; then this run's own mounts.
mount --bind "$root" "$root"
mounted+=("$root")
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount -t sysfs sys "$root/sys" && mounted+=("$root/sys")
mount --bind /dev "$root/dev" && mounted+=("$root/dev")
mount --bind /dev/pts "$root/dev/pts" && mounted+=("$root/dev/pts")
mount -t tmpfs tmpfs "$root/tmp" && mounted+=("$root/tmp")
cp /etc/resolv.conf "$root/etc/resolv.conf"
# debootstrap writes no /etc/hosts; an installed system has one, and
# "localhost" must resolve without DNS.
if [ ! -s "$root/etc/hosts" ]; then
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
fi
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF

root_env=(HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
[ "$host_ca" = 1 ] && root_env+=(PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
in_root() {
  env -i "${root_env[@]}" chroot "$root" /bin/bash -c "$1"
}

if [ ! -d "$root/root/mpt/.git" ]; then
  echo "=== git, ca-certificates, sudo; clone of $(git -C "$here" rev-parse --short HEAD)"
  in_root 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git ca-certificates sudo >/dev/null'
  mkdir -p "$root/mnt/src"
  mount --bind -o ro "$here" "$root/mnt/src"
  mounted+=("$root/mnt/src")
  in_root 'git clone -q /mnt/src /root/mpt'
fi
if [ "$host_ca" = 1 ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  in_root 'update-ca-certificates >/dev/null'
fi

status=0
run() {
  local name=$1 command=$2 start rc
  echo "=== $command (log: $dir/$name.log)"
  start=$(date +%s)
  set +e
  in_root "cd /root/mpt && $command" > "$dir/$name.log" 2>&1
  rc=$?
  set -e
  echo "$command: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$dir/$name.log"
  [ "$rc" = 0 ] || status=1
}
run run_demo tools/run_demo.sh
[ "$tests" = 1 ] && run run_tests tools/run_tests.sh
in_root 'cd /root/mpt && bazel shutdown' >/dev/null 2>&1 || true
exit "$status"
