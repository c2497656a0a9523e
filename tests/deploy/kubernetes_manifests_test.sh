#!/usr/bin/env bash
# The Kubernetes manifests in deploy/kubernetes validate against the
# Kubernetes API's JSON schemas (kubernetes-validate from PyPI, which carries
# the schemas and needs no network; tools/setup.sh installs it into
# /opt/mpt-tools/kubernetes-validate), strictly: unknown fields are errors.
# Two broken copies must fail, so the check cannot pass by checking nothing.
# Skips itself (passes, printing SKIPPED) when the validator is missing.
set -euo pipefail

validator="${MPT_KUBERNETES_VALIDATE:-/opt/mpt-tools/kubernetes-validate/bin/kubernetes-validate}"
if [ ! -x "$validator" ]; then
  validator=$(command -v kubernetes-validate || true)
fi
if [ -z "$validator" ]; then
  echo "SKIPPED: kubernetes-validate is not installed (tools/setup.sh installs it from PyPI" \
       "into /opt/mpt-tools/kubernetes-validate; or set MPT_KUBERNETES_VALIDATE)" >&2
  exit 0
fi
# The oldest and the newest Kubernetes the examples are meant for.
VERSIONS="${KUBERNETES_VERSIONS:-1.30.0 1.37.0}"

dir="${TEST_SRCDIR}/${TEST_WORKSPACE}/deploy/kubernetes"
manifests=("$dir"/*.yaml)
[ "${#manifests[@]}" -ge 3 ] || { echo "FAIL: expected the manifests in $dir" >&2; exit 1; }

out="${TEST_TMPDIR:-$(mktemp -d)}"
docs=$(cat "${manifests[@]}" | grep -c '^kind:')
for version in $VERSIONS; do
  "$validator" --strict -k "$version" "${manifests[@]}" | tee "$out/validate-$version.log"
  # Every document of every file was checked and passed.
  passed=$(grep -c ' passed for resource ' "$out/validate-$version.log" || true)
  if [ "$passed" -ne "$docs" ]; then
    echo "FAIL: $docs resources in the manifests, $passed passed validation against $version" >&2
    exit 1
  fi
done

# A wrong type and a misspelt required field are caught.
sed 's/^\(\s*\)replicas: .*/\1replicas: "two"/' "$dir/workers-cpu.yaml" > "$out/bad_type.yaml"
sed 's/^\(\s*\)containers:/\1containerz:/' "$dir/workers-cpu.yaml" > "$out/bad_field.yaml"
for bad in bad_type bad_field; do
  if "$validator" --strict "$out/$bad.yaml" > "$out/$bad.log" 2>&1; then
    echo "FAIL: the validator accepted $bad.yaml:" >&2
    cat "$out/$bad.log" >&2
    exit 1
  fi
  grep -q "did not validate" "$out/$bad.log" || { cat "$out/$bad.log" >&2; exit 1; }
done
echo "PASSED: $docs resources in ${#manifests[@]} files validate against Kubernetes" \
     "$VERSIONS (strict); broken copies are rejected"
