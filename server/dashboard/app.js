// The coordinator's dashboard: read-only views over the JSON endpoints of
// server/coordinator_http.h. No framework and nothing fetched from elsewhere.
//
// The token (when the coordinator needs one) arrives once in the page's
// address as ?token=...; it is taken out of the address bar at once, kept in
// memory only, and sent as "Authorization: Bearer" with every request.
'use strict';

const REFRESH_MS = 2000;
const EVENT_PAGE = 500;
const LOG_LINES_KEPT = 2000;
const LOG_LINES_SHOWN = 200;
const SVG_NS = 'http://www.w3.org/2000/svg';
const STATE_COLORS = {
  QUEUED: '#98a2b3', RUNNING: '#2e90fa', SUCCEEDED: '#12b76a', FAILED: '#f04438',
  CANCELLING: '#f79009', CANCELLED: '#7a5af8',
};
const SERIES_COLORS = ['#2e90fa', '#f04438', '#12b76a', '#f79009', '#7a5af8', '#ee46bc',
                       '#0e9384', '#667085'];

const app = {
  token: null,
  // Per job: its events so far and the last sequence read; its newest log
  // lines and the last line number read.
  events: new Map(),
  logs: new Map(),
  busy: false,
};

// ---- Helpers -------------------------------------------------------------

// An element with attributes and children (strings become text nodes, never
// HTML: every name shown here comes from users).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function authHeaders() {
  return app.token ? { Authorization: 'Bearer ' + app.token } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    try { message = JSON.parse(text).error || text; } catch (e) { /* plain text */ }
    throw new Error(`${path}: HTTP ${response.status}: ${message}`);
  }
  return JSON.parse(text);
}

const num = (v) => (v === undefined || v === null || v === '' ? 0 : Number(v));

function badge(state) {
  return el('span', { class: 'badge s-' + state }, state || '?');
}

function bar(fraction) {
  const pct = Math.max(0, Math.min(1, fraction)) * 100;
  return el('span', { class: 'bar', title: pct.toFixed(0) + '%' },
            el('div', { style: `width:${pct.toFixed(1)}%` }));
}

function fmtTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}

function fmtBytes(n) {
  n = num(n);
  if (n < 1024) return n + ' B';
  if (n < 1 << 20) return (n / 1024).toFixed(1) + ' KiB';
  if (n < 1 << 30) return (n / (1 << 20)).toFixed(1) + ' MiB';
  return (n / (1 << 30)).toFixed(2) + ' GiB';
}

function fmtNum(v) {
  if (!isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

function jobId(name) { return name.replace(/^jobs\//, ''); }

// The fraction of a stage that is done.
function stageFraction(stage) {
  if (stage.state === 'SUCCEEDED') return 1;
  const p = stage.progress || {};
  const total = num(p.totalSteps);
  return total > 0 ? num(p.step) / total : 0;
}

function jobFraction(job) {
  const stages = job.stages || [];
  if (job.state === 'SUCCEEDED') return 1;
  if (stages.length === 0) return 0;
  return stages.reduce((sum, s) => sum + stageFraction(s), 0) / stages.length;
}

function setStatus(text, isError) {
  const status = document.getElementById('status');
  status.textContent = text;
  status.className = 'status' + (isError ? ' error' : '');
}

// ---- The jobs and workers view ---------------------------------------------

function jobsTable(jobs) {
  const rows = jobs.map((job) => el('tr', { 'data-job': job.name },
    el('td', {}, el('a', { href: '#/jobs/' + jobId(job.name) }, job.name)),
    el('td', {}, job.displayName || ''),
    el('td', {}, job.kind || ''),
    el('td', {}, badge(job.state)),
    el('td', {}, bar(jobFraction(job)), (jobFraction(job) * 100).toFixed(0) + '%'),
    el('td', {}, (job.stages || []).filter((s) => s.state === 'SUCCEEDED').length + ' / ' +
                 (job.stages || []).length),
    el('td', {}, fmtTime(job.createTime)),
    el('td', { class: 'wrap error-text' }, job.error || '')));
  return el('table', { id: 'jobs' },
    el('thead', {}, el('tr', {}, ['job', 'name', 'kind', 'state', 'progress',
                                   'stages done', 'created', 'error'].map((h) => el('th', {}, h)))),
    el('tbody', {}, rows));
}

function workersTable(workers) {
  const rows = workers.map((w) => el('tr', { 'data-worker': w.name },
    el('td', {}, w.name),
    el('td', {}, w.hostname || ''),
    el('td', {}, w.device || ''),
    el('td', {}, badge(w.state)),
    el('td', {}, (w.running || []).map((r) =>
      el('div', {}, el('a', { href: '#/jobs/' + jobId(r.job) }, r.job), ' ', r.stage,
         r.worldSize > 1 ? ` (rank ${r.rank} of ${r.worldSize})` : ''))),
    el('td', {}, (w.collectives || []).join(', ')),
    el('td', {}, fmtTime(w.lastHeartbeat))));
  return el('table', { id: 'workers' },
    el('thead', {}, el('tr', {}, ['worker', 'host', 'device', 'state', 'running',
                                   'collectives', 'last heartbeat'].map((h) => el('th', {}, h)))),
    el('tbody', {}, rows));
}

async function showOverview(main) {
  const [jobs, workers] = await Promise.all([api('/api/jobs?page_size=100'),
                                             api('/api/workers')]);
  main.replaceChildren(
    el('h1', {}, 'Jobs'),
    el('section', {}, (jobs.jobs || []).length ? jobsTable(jobs.jobs) :
                       el('p', { class: 'muted' }, 'No jobs yet.')),
    el('h1', {}, 'Workers'),
    el('section', {}, (workers.workers || []).length ? workersTable(workers.workers) :
                       el('p', { class: 'muted' }, 'No workers registered.')));
  document.body.dataset.view = 'overview';
}

// ---- One job ---------------------------------------------------------------

// The stages as their DAG: sources, then the distillation, then targets;
// each column depends on every stage of the column before it.
function stageDag(job) {
  const columns = [[], [], []];
  for (const s of job.stages || []) {
    const kind = s.id.split('/')[0];
    columns[kind === 'source' ? 0 : kind === 'distillation' ? 1 : 2].push(s);
  }
  const used = columns.filter((c) => c.length > 0);
  const W = 190, H = 50, GAP_X = 70, GAP_Y = 14, PAD = 10;
  const rows = Math.max(1, ...used.map((c) => c.length));
  const width = PAD * 2 + used.length * W + (used.length - 1) * GAP_X;
  const height = PAD * 2 + rows * H + (rows - 1) * GAP_Y;
  const pos = new Map();
  used.forEach((col, i) => {
    const top = PAD + (height - PAD * 2 - (col.length * H + (col.length - 1) * GAP_Y)) / 2;
    col.forEach((s, j) => pos.set(s.id, { x: PAD + i * (W + GAP_X), y: top + j * (H + GAP_Y) }));
  });
  const root = svg('svg', { id: 'dag', class: 'dag', width, height,
                            viewBox: `0 0 ${width} ${height}` },
    svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5,
                                    markerWidth: 6, markerHeight: 6, orient: 'auto' },
                        svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#98a2b3' }))));
  for (let i = 0; i + 1 < used.length; ++i) {
    for (const a of used[i]) {
      for (const b of used[i + 1]) {
        const p = pos.get(a.id), q = pos.get(b.id);
        const x1 = p.x + W, y1 = p.y + H / 2, x2 = q.x, y2 = q.y + H / 2;
        root.append(svg('path', { class: 'edge', 'data-from': a.id, 'data-to': b.id,
                                  d: `M${x1},${y1} C${x1 + GAP_X / 2},${y1} ${x2 - GAP_X / 2},${y2} ${x2},${y2}` }));
      }
    }
  }
  for (const s of job.stages || []) {
    const p = pos.get(s.id);
    const f = stageFraction(s);
    const prog = s.progress || {};
    const detail = num(prog.totalSteps) > 0 ? `${num(prog.step)}/${num(prog.totalSteps)}` : '';
    root.append(svg('g', { class: 'node', 'data-stage': s.id, 'data-state': s.state,
                           transform: `translate(${p.x},${p.y})` },
      svg('title', {}, `${s.id}: ${s.state}` + (s.error ? ` (${s.error})` : '')),
      svg('rect', { class: 'box', width: W, height: H, rx: 6,
                    fill: STATE_COLORS[s.state] || '#667085' }),
      svg('text', { x: 8, y: 17, 'font-weight': 600 }, s.id),
      svg('text', { x: 8, y: 32 }, `${s.state} ${detail}`),
      svg('rect', { x: 8, y: 38, width: W - 16, height: 5, fill: 'rgba(255,255,255,0.35)' }),
      svg('rect', { class: 'progress', x: 8, y: 38, width: ((W - 16) * f).toFixed(1),
                    height: 5, fill: '#fff' })));
  }
  return root;
}

function stagesTable(job) {
  const rows = (job.stages || []).map((s) => {
    const p = s.progress || {};
    const losses = Object.entries(p.losses || {}).map(([k, v]) => `${k}=${fmtNum(v)}`).join(' ');
    const metrics = Object.entries(p.metrics || {}).map(([k, v]) => `${k}=${fmtNum(v)}`).join(' ');
    return el('tr', { 'data-stage': s.id },
      el('td', {}, s.id), el('td', {}, badge(s.state)),
      el('td', {}, bar(stageFraction(s)), `${num(p.step)} / ${num(p.totalSteps)}`),
      el('td', {}, losses), el('td', { class: 'wrap' }, metrics),
      el('td', {}, num(p.tokensPerSecond) > 0 ? fmtNum(num(p.tokensPerSecond)) : ''),
      el('td', {}, (s.workers || []).join(', ')), el('td', {}, num(s.attempts)),
      el('td', { class: 'wrap error-text' }, s.error || ''));
  });
  return el('table', { id: 'stages' },
    el('thead', {}, el('tr', {}, ['stage', 'state', 'steps', 'losses', 'metrics', 'tokens/s',
                                   'workers', 'attempts', 'error'].map((h) => el('th', {}, h)))),
    el('tbody', {}, rows));
}

async function download(event, name) {
  if (!app.token) return;  // a plain link does it
  event.preventDefault();
  try {
    const response = await fetch('/download/' + name, { headers: authHeaders() });
    if (!response.ok) throw new Error(`download ${name}: HTTP ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    const a = el('a', { href: url, download: name.replace(/\//g, '_') + '.tar' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    setStatus(e.message, true);
  }
}

function artifactsTable(job) {
  const rows = (job.artifacts || []).map((a) => el('tr', { 'data-artifact': a.name },
    el('td', {}, el('a', { class: 'download', href: '/download/' + a.name,
                           download: a.name.replace(/\//g, '_') + '.tar',
                           onclick: (e) => download(e, a.name) }, a.name)),
    el('td', {}, a.kind), el('td', {}, a.stage), el('td', {}, fmtBytes(a.sizeBytes)),
    el('td', { title: a.sha256 }, (a.sha256 || '').slice(0, 12)),
    el('td', {}, fmtTime(a.createTime))));
  return el('table', { id: 'artifacts' },
    el('thead', {}, el('tr', {}, ['artefact (download)', 'kind', 'stage', 'size', 'sha256',
                                   'created'].map((h) => el('th', {}, h)))),
    el('tbody', {}, rows));
}

// Reads the job's events not yet read.
async function loadEvents(name) {
  let cache = app.events.get(name);
  if (!cache) {
    cache = { last: 0, events: [] };
    app.events.set(name, cache);
  }
  for (;;) {
    const page = await api(`/api/${name}/events?after=${cache.last}&limit=${EVENT_PAGE}`);
    const events = page.events || [];
    for (const e of events) {
      cache.events.push(e);
      cache.last = Math.max(cache.last, num(e.sequence));
    }
    // A page may end early when its events are large ("more").
    if (!page.more && events.length < EVENT_PAGE) break;
    if (events.length === 0) break;
  }
  return cache.events;
}

// Reads the job's log lines not yet read (all stages, in stored order).
async function loadLogs(name) {
  let cache = app.logs.get(name);
  if (!cache) {
    cache = { last: 0, lines: [], dropped: {} };
    app.logs.set(name, cache);
  }
  for (;;) {
    const page = await api(`/api/${name}/logs?after_line=${cache.last}&page_size=1000`);
    for (const line of page.lines || []) cache.lines.push(line);
    cache.last = num(page.lastLine) || cache.last;
    Object.assign(cache.dropped, page.droppedLines || {});
    if (!page.more) break;
  }
  // Keep the newest lines only: the page shows the end of the log.
  if (cache.lines.length > LOG_LINES_KEPT) cache.lines.splice(0, cache.lines.length - LOG_LINES_KEPT);
  return cache;
}

function logsView(logs) {
  if (!logs.lines.length) return el('p', { class: 'muted', id: 'logs' }, 'No log lines yet.');
  const text = logs.lines.slice(-LOG_LINES_SHOWN).map((l) =>
    `${fmtTime(l.time)} ${l.stage} ${(l.severity || 'INFO').charAt(0)} ${l.text}`).join('\n');
  const dropped = Object.entries(logs.dropped).map(([s, n]) => `${s}: ${num(n)}`).join(', ');
  return el('div', {},
    dropped ? el('p', { class: 'muted' }, 'oldest lines dropped by the coordinator: ' + dropped)
            : null,
    el('pre', { id: 'logs', class: 'logs' }, text));
}

// Points (step, value) of each series of `field` ("losses" or "metrics")
// for one stage, from its progress events.
function seriesOf(events, stageId, field) {
  const series = new Map();
  for (const e of events) {
    if (e.stage !== stageId || !e.progress || !e.progress[field]) continue;
    const step = num(e.progress.step);
    for (const [k, v] of Object.entries(e.progress[field])) {
      const value = Number(v);
      if (!isFinite(value)) continue;
      if (!series.has(k)) series.set(k, []);
      const points = series.get(k);
      // A resumed or repeated report of the same step replaces the old one.
      if (points.length && points[points.length - 1][0] === step) points.pop();
      points.push([step, value]);
    }
  }
  return series;
}

// A line chart of `series` (name -> [[x, y], ...]) as inline SVG.
function lineChart(title, stageId, kind, series) {
  const W = 380, H = 180, L = 62, R = 10, T = 10, B = 26;
  let xs = [], ys = [];
  for (const pts of series.values()) for (const [x, y] of pts) { xs.push(x); ys.push(y); }
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const root = svg('svg', { class: 'curve', 'data-stage': stageId, 'data-kind': kind,
                            width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  for (let i = 0; i <= 4; ++i) {
    const y = y0 + (y1 - y0) * i / 4;
    root.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: sy(y), y2: sy(y) }),
                svg('text', { x: L - 4, y: sy(y) + 4, 'text-anchor': 'end' }, fmtNum(y)));
  }
  root.append(svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }),
              svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }),
              svg('text', { x: L, y: H - 8 }, fmtNum(x0)),
              svg('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, fmtNum(x1)),
              svg('text', { x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle' }, 'step'));
  const legend = el('div', { class: 'legend' });
  [...series.keys()].sort().forEach((name, i) => {
    const color = SERIES_COLORS[i % SERIES_COLORS.length];
    const pts = series.get(name);
    root.append(svg('polyline', {
      class: 'curve-line', 'data-series': name, 'data-points': pts.length, stroke: color,
      points: pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ') }));
    if (pts.length === 1) {
      root.append(svg('circle', { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 3, fill: color }));
    }
    legend.append(el('span', {}, el('i', { style: 'background:' + color }), name));
  });
  return el('div', { class: 'chart' }, el('h3', {}, title), root, legend);
}

function charts(job, events) {
  const out = [];
  for (const s of job.stages || []) {
    const losses = seriesOf(events, s.id, 'losses');
    if (losses.size) out.push(lineChart(`${s.id}: losses`, s.id, 'losses', losses));
    const metrics = seriesOf(events, s.id, 'metrics');
    if (metrics.size) out.push(lineChart(`${s.id}: evaluation`, s.id, 'metrics', metrics));
  }
  return out.length ? el('div', { class: 'charts', id: 'charts' }, out)
                    : el('p', { class: 'muted', id: 'charts' }, 'No losses reported yet.');
}

function eventsTable(events) {
  const last = events.slice(-30).reverse();
  return el('table', { id: 'events' },
    el('thead', {}, el('tr', {}, ['#', 'time', 'stage', 'state', 'message'].map(
      (h) => el('th', {}, h)))),
    el('tbody', {}, last.map((e) => el('tr', {},
      el('td', {}, num(e.sequence)), el('td', {}, fmtTime(e.time)), el('td', {}, e.stage || ''),
      el('td', {}, e.stage ? (e.stageState || '') : (e.state || '')),
      el('td', { class: 'wrap' }, e.message || '')))));
}

async function showJob(main, id) {
  const name = 'jobs/' + id;
  const [job, events, logs] = await Promise.all([api('/api/' + name), loadEvents(name),
                                                 loadLogs(name)]);
  main.replaceChildren(
    el('h1', {}, el('span', { id: 'job-name' }, job.name), ' ', badge(job.state), ' ',
       job.displayName ? el('span', { class: 'muted' }, job.displayName) : null),
    el('section', {},
       el('div', {}, bar(jobFraction(job)), (jobFraction(job) * 100).toFixed(0) + '% · ',
          job.kind, ' · created ', fmtTime(job.createTime),
          job.endTime ? ' · ended ' + fmtTime(job.endTime) : ''),
       job.error ? el('p', { class: 'error-text' }, job.error) : null),
    el('h2', {}, 'Stages'),
    el('section', {}, stageDag(job), stagesTable(job)),
    el('h2', {}, 'Curves'),
    el('section', {}, charts(job, events)),
    el('h2', {}, 'Artefacts'),
    el('section', {}, (job.artifacts || []).length ? artifactsTable(job) :
                       el('p', { class: 'muted' }, 'No artefacts yet.')),
    el('h2', {}, 'Latest events'),
    el('section', {}, eventsTable(events)),
    el('h2', {}, 'Logs (newest last)'),
    el('section', {}, logsView(logs)));
  document.body.dataset.view = 'job';
}

// ---- Routing and refresh ---------------------------------------------------

async function refresh() {
  if (app.busy) return;
  app.busy = true;
  const main = document.getElementById('main');
  const m = location.hash.match(/^#\/jobs\/([A-Za-z0-9_-]+)$/);
  try {
    if (m) await showJob(main, m[1]);
    else await showOverview(main);
    setStatus('updated ' + new Date().toLocaleTimeString(), false);
    document.body.dataset.loaded = 'true';
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    app.busy = false;
  }
}

function start() {
  const params = new URLSearchParams(location.search);
  if (params.has('token')) {
    app.token = params.get('token');
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
  }
  window.addEventListener('hashchange', refresh);
  refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
