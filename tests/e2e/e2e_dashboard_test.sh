#!/usr/bin/env bash
# The dashboard in a real browser: a coordinator with a token serves it on
# its HTTP port while a worker runs a small pipeline; headless Chromium
# (Debian's `chromium`) loads the page with the token, runs its scripts, and
# the DOM it dumps must show the job, its stages as a DAG, drawn loss
# curves and artefact download links; the overview must show the job and
# the worker, and then a second job RUNNING with the worker busy on its
# stage. Screenshots go to the test's outputs. The JSON endpoints and
# the download refuse requests without the token, and the downloaded bytes
# match the artefact's SHA-256.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

CHROMIUM="${E2E_CHROMIUM:-/usr/bin/chromium}"
PYTHON=/usr/bin/python3
[ -x "$CHROMIUM" ] || e2e_fail "$CHROMIUM not found (tools/setup.sh installs chromium)"
[ -x "$PYTHON" ] || e2e_fail "$PYTHON not found"
HERE="$E2E_RUNFILES/tests/e2e"
OUT="${TEST_UNDECLARED_OUTPUTS_DIR:-$E2E_DIR/outputs}"
mkdir -p "$OUT"

# Headless, as root in a container: no sandbox, no GPU, no /dev/shm limits.
browser() {
  timeout 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --no-first-run --user-data-dir="$E2E_DIR/chromium-profile" "$@" 2>>"$E2E_DIR/logs/chromium.log"
}
probe=$(browser --dump-dom 'data:text/html,<p id=p></p><script>p.textContent="js "+(6*7)</script>') ||
  e2e_fail "chromium does not start headless (see chromium.log)"
echo "$probe" | grep -q 'js 42' || e2e_fail "chromium ran no JavaScript: $probe"

TOKEN="dashboard-token-$RANDOM$RANDOM"
echo "$TOKEN" > "$E2E_DIR/token"
e2e_start_coordinator --http_listen=127.0.0.1:0 --auth_token_file="$E2E_DIR/token"
http_port=$(grep -o 'http port [0-9]*' "$E2E_DIR/logs/coordinator.log" | tail -n 1 | grep -o '[0-9]*$')
[ -n "$http_port" ] || e2e_fail "the coordinator did not report its HTTP port"
BASE="http://127.0.0.1:$http_port"
e2e_start_worker w0 --token_file="$E2E_DIR/token"
export MPT_TOKEN="$TOKEN"

# Enough steps per stage for several progress events: the workers report at
# most every 0.2 s, and 60 steps of the test model can take less than that
# (then a stage's loss chart has one point). 300 take about a second.
spec=$(SOURCE_TASKS="first last" TARGET_TASKS="echo:echo" WORLD_SIZE=1 SOURCE_STEPS=300 \
       DISTILL_STEPS=300 TARGET_STEPS=300 CHECKPOINT_EVERY=150 e2e_write_spec "$E2E_DIR/spec.textproto")
job=$(mptctl submit --spec "$spec" --name=dashboard-e2e)
id=${job#jobs/}
e2e_log "submitted $job"


e2e_wait_state "$job" SUCCEEDED 180

get() { "$PYTHON" "$HERE/http_get.py" "$@"; }
# The token guards the page, the JSON and the download; /metrics is open.
get "$BASE/api/jobs" > /dev/null 2>&1 && e2e_fail "/api/jobs answered without the token"
get "$BASE/" > /dev/null 2>&1 && e2e_fail "the page was served without the token"
get "$BASE/api/jobs" "wrong-$TOKEN" > /dev/null 2>&1 && e2e_fail "/api/jobs took a wrong token"
get "$BASE/metrics" > /dev/null 2>&1 || e2e_fail "/metrics needs no token"
get "$BASE/api/jobs" "$TOKEN" > "$E2E_DIR/jobs.json" 2>/dev/null || e2e_fail "/api/jobs with the token"
grep -q "\"$job\"" "$E2E_DIR/jobs.json" || e2e_fail "/api/jobs does not list $job"
get "$BASE/api/$job/events?after=0&limit=5" "$TOKEN" > "$E2E_DIR/events.json" 2>/dev/null ||
  e2e_fail "/api/$job/events"
[ "$(grep -o '"sequence"' "$E2E_DIR/events.json" | wc -l)" -eq 5 ] || e2e_fail "events: limit=5 not honoured"
get "$BASE/api/jobs/nosuchjob" "$TOKEN" > /dev/null 2>"$E2E_DIR/notfound.txt" && e2e_fail "unknown job found"
grep -q 404 "$E2E_DIR/notfound.txt" || e2e_fail "unknown job is not 404"

# Download an adapter over HTTP: the bytes hash to the artefact's SHA-256.
artifact=$(e2e_stage_field "$job" distillation artifact)
sha=$(e2e_job_json "$job" | grep -A4 "\"name\": \"$artifact\"" | sed -n 's/.*"sha256": "\([0-9a-f]*\)".*/\1/p')
[ -n "$sha" ] || e2e_fail "no sha256 for $artifact"
get "$BASE/download/$artifact" > /dev/null 2>&1 && e2e_fail "download without the token"
get "$BASE/download/$artifact?token=$TOKEN" > "$E2E_DIR/download.tar" 2>/dev/null ||
  e2e_fail "download of $artifact with ?token="
[ "$(sha256sum < "$E2E_DIR/download.tar" | cut -d' ' -f1)" = "$sha" ] ||
  e2e_fail "the downloaded bytes do not match $artifact's sha256"
# The body is read from disk as it is sent; a Range request gets its part.
get "$BASE/download/$artifact" "$TOKEN" "bytes=100-611" > "$E2E_DIR/part.bin" 2>"$E2E_DIR/part.txt" ||
  e2e_fail "Range request"
grep -q 206 "$E2E_DIR/part.txt" || e2e_fail "a Range request is not 206 Partial Content"
cmp -s "$E2E_DIR/part.bin" <(tail -c +101 "$E2E_DIR/download.tar" | head -c 512) ||
  e2e_fail "the Range request's bytes are not bytes 100..611 of the artefact"

# The job's page, after its scripts ran and fetched the JSON.
budget=--virtual-time-budget=6000
browser "$budget" --dump-dom "$BASE/?token=$TOKEN#/jobs/$id" > "$OUT/job_page.html" ||
  e2e_fail "chromium failed on the job page"
dom="$OUT/job_page.html"
grep -q 'data-view="job"' "$dom" || e2e_fail "the job view did not render (see job_page.html)"
grep -q "<span id=\"job-name\">$job</span>" "$dom" || e2e_fail "the page does not name $job"
for stage in source/first source/last distillation target/echo; do
  grep -q "<g class=\"node\" data-stage=\"$stage\" data-state=\"SUCCEEDED\"" "$dom" ||
    e2e_fail "the DAG lacks $stage as SUCCEEDED"
done
grep -q 'class="edge" data-from="source/first" data-to="distillation"' "$dom" ||
  e2e_fail "the DAG lacks the edge source/first -> distillation"
grep -q 'class="edge" data-from="distillation" data-to="target/echo"' "$dom" ||
  e2e_fail "the DAG lacks the edge distillation -> target/echo"
# A drawn loss curve: a polyline with at least two points.
"$PYTHON" - "$dom" <<'PY' || e2e_fail "no loss curve with two or more points in the page"
import re, sys
dom = open(sys.argv[1]).read()
curves = re.findall(r'<svg class="curve" data-stage="([^"]+)" data-kind="losses".*?</svg>', dom, re.S)
lines = re.findall(r'<polyline class="curve-line" data-series="loss" data-points="(\d+)"[^>]*points="([^"]+)"', dom)
drawn = [pts for n, pts in lines if int(n) >= 2 and len(pts.split()) >= 2]
print(f"loss charts for {curves}; loss polylines with >= 2 points: {len(drawn)}", file=sys.stderr)
sys.exit(0 if curves and drawn else 1)
PY
grep -q '<pre id="logs" class="logs">' "$dom" || e2e_fail "the page shows no stage logs"
grep -q 'target/echo I FINISHED' "$dom" || e2e_fail "the logs lack target/echo's FINISHED line"
grep -q "class=\"download\" href=\"/download/$artifact\"" "$dom" ||
  e2e_fail "no download link for $artifact"
grep -q "$TOKEN" "$dom" && e2e_fail "the token leaked into the page"

# The overview: the job with its state, the worker idle.
browser "$budget" --dump-dom "$BASE/?token=$TOKEN" > "$OUT/overview.html" ||
  e2e_fail "chromium failed on the overview"
grep -q 'data-view="overview"' "$OUT/overview.html" || e2e_fail "the overview did not render"
grep -q "<tr data-job=\"$job\">" "$OUT/overview.html" || e2e_fail "the overview lacks $job"
grep -q "<tr data-worker=\"$(e2e_worker_name w0)\">" "$OUT/overview.html" ||
  e2e_fail "the overview lacks the worker"

# Without the token the browser gets the refusal, not the page.
browser "$budget" --dump-dom "$BASE/" > "$OUT/no_token.html" || true
grep -q 'needs its API token' "$OUT/no_token.html" || e2e_fail "the page without the token was not refused"

# Screenshots for people.
browser "$budget" --window-size=1400,2200 --screenshot="$OUT/dashboard_job.png" \
  "$BASE/?token=$TOKEN#/jobs/$id" > /dev/null || e2e_fail "no screenshot of the job page"
browser "$budget" --window-size=1400,900 --screenshot="$OUT/dashboard_overview.png" \
  "$BASE/?token=$TOKEN" > /dev/null || e2e_fail "no screenshot of the overview"
# A job that runs until cancelled: the overview shows it RUNNING and the
# worker with the stage it runs.
long_spec=$(SOURCE_TASKS="first" SOURCE_STEPS=100000 CHECKPOINT_EVERY=1000 WORLD_SIZE=1 \
            e2e_write_spec "$E2E_DIR/long.textproto")
long=$(mptctl submit --spec "$long_spec" --kind=source --name=runs-until-cancelled)
long_running() { [ "$(e2e_stage_field "$long" source/first state)" = RUNNING ]; }
e2e_wait_for 60 "$long to run" long_running
browser "$budget" --dump-dom "$BASE/?token=$TOKEN" > "$OUT/overview_running.html" ||
  e2e_fail "chromium failed on the overview while a job runs"
"$PYTHON" - "$OUT/overview_running.html" "$long" "$(e2e_worker_name w0)" <<'PY' ||
import re, sys
dom, job, worker = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
row = re.search(r'<tr data-job="%s">.*?</tr>' % re.escape(job), dom, re.S)
ok_job = bool(row) and 'class="badge s-RUNNING"' in row.group(0)
wrow = re.search(r'<tr data-worker="%s">.*?</tr>' % re.escape(worker), dom, re.S)
ok_worker = bool(wrow) and 'class="badge s-busy"' in wrow.group(0) and \
    ('href="#/jobs/%s">%s</a> source/first' % (job.split("/")[1], job)) in wrow.group(0)
print(f"running job shown: {ok_job}; worker busy with it: {ok_worker}", file=sys.stderr)
sys.exit(0 if ok_job and ok_worker else 1)
PY
  e2e_fail "the overview does not show $long running on the worker (see overview_running.html)"
browser "$budget" --window-size=1400,700 --screenshot="$OUT/dashboard_running.png" \
  "$BASE/?token=$TOKEN" > /dev/null || e2e_fail "no screenshot of the running overview"
mptctl cancel "$long" > /dev/null || e2e_fail "cannot cancel $long"

for png in dashboard_job.png dashboard_overview.png dashboard_running.png; do
  [ "$(head -c 8 "$OUT/$png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
    e2e_fail "$png is not a PNG"
done
e2e_log "dashboard checked; screenshots in $OUT"
