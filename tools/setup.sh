#!/usr/bin/env bash
# Installs every Debian package that the build, the tests and the demo need
# (and kubernetes-validate from PyPI into a virtual environment, see below).
# Idempotent and non-interactive; returns in about a second when everything
# is already there. Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  # Build
  bazel-bootstrap g++ pkg-config git
  # Libraries
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgloo-dev libsentencepiece-dev sentencepiece
  libsqlite3-dev sqlite3 nlohmann-json3-dev
  libcpp-httplib-dev
  # The programs' allocator (common/heap_memory.h)
  libtcmalloc-minimal4
  # Tokenizers of decoder-only models (//worker/model:hf_tokenizer)
  libpcre2-dev
  # Tests
  libgtest-dev libgmock-dev iproute2 procps
  # The Python client and its test (python/, tests/e2e:e2e_python_client_test)
  python3-grpcio python3-protobuf python3-pip python3-setuptools
  # Metrics and the dashboard: the real Prometheus server and promtool
  # (tests/e2e:e2e_prometheus_test, tests/common:metrics_promtool_test) and
  # headless Chromium (tests/e2e:e2e_dashboard_test)
  prometheus chromium
  # python3 -m venv for kubernetes-validate (below)
  python3-venv
  # The learning study's PNG plots (tools/study/run_study.py)
  python3-matplotlib
  # Fuzzing (tools/fuzz): clang with libFuzzer and the sanitizer runtimes
  clang-14 libfuzzer-14-dev libclang-rt-14-dev
  # A real Slurm on this machine (tests/e2e:e2e_slurm_test): the parts of
  # slurm-wlm it needs, and munge (about 3 MB). Their init scripts start no
  # slurmctld or slurmd without /etc/slurm/slurm.conf; where services may
  # start, the system munged runs on its own socket, which the test does
  # not use (it writes its own configuration and starts its own daemons).
  slurmctld slurmd slurm-client munge
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libtorch runs its matrix products through whatever libblas.so.3 the
# alternatives system selects; the reference BLAS is ten times slower than
# OpenBLAS, so make sure OpenBLAS is the one.
blas=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
if [ -e "$blas" ] && command -v update-alternatives >/dev/null; then
  current=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/ {print $2}')
  if [ "$current" != "$blas" ]; then
    ${SUDO:-} update-alternatives --set libblas.so.3-x86_64-linux-gnu "$blas" >/dev/null
  fi
fi

# The Kubernetes manifests' schema check (tests/deploy:kubernetes_manifests_test)
# uses PyPI's kubernetes-validate, which carries the Kubernetes JSON schemas
# and needs no network when it runs. It goes into a virtual environment of
# its own; without PyPI the test skips itself and says why.
# MPT_SETUP_KUBERNETES_VALIDATE=0 leaves it out (the Docker build does).
KUBE_VALIDATE_VENV=/opt/mpt-tools/kubernetes-validate
KUBE_VALIDATE_VERSION=1.37.0
if [ "${MPT_SETUP_KUBERNETES_VALIDATE:-1}" != 0 ] &&
   [ ! -e "$KUBE_VALIDATE_VENV/installed-$KUBE_VALIDATE_VERSION" ]; then
  echo "setup: installing kubernetes-validate $KUBE_VALIDATE_VERSION into $KUBE_VALIDATE_VENV" >&2
  if ! { ${SUDO:-} python3 -m venv "$KUBE_VALIDATE_VENV" &&
         ${SUDO:-} "$KUBE_VALIDATE_VENV/bin/pip" install -q --disable-pip-version-check \
           "kubernetes-validate==$KUBE_VALIDATE_VERSION" &&
         ${SUDO:-} touch "$KUBE_VALIDATE_VENV/installed-$KUBE_VALIDATE_VERSION"; }; then
    echo "setup: warning: could not install kubernetes-validate (no PyPI?);" \
         "tests/deploy:kubernetes_manifests_test will skip" >&2
  fi
fi
