// The dashboard: polls the orchestrator's JSON API every two seconds and redraws the views. Anyone who can
// reach the page sees everything read-only; the action buttons appear only once a token has been pasted,
// and every action is sent with it (the orchestrator decides whether the token's role may do it).
import { ApiError, enc, forgetToken, get, post, setToken, token } from './api.js';
import { CHART_JS_VERSION, SessionCharts, TimelineChart } from './charts.js';
import { CYTOSCAPE_VERSION, GraphView } from './graph.js';
import {
  ago, bytes, clock, colourOf, duration, fillSelect, h, number, replaceRows, shortId,
} from './util.js';

const POLL_MS = 2000;
const KEPT_STEPS = 20; // how many recent steps the orchestrator keeps timelines of
const $ = (selector) => document.querySelector(selector);

const state = {
  overview: null,
  names: new Map(), // PNode id -> name
  placement: '', // the fleet's VNodes as last seen: the graph is fetched again when they move
  graphOf: '', // the network whose graph is shown
  timelineKey: '', // what the timeline shows: `${session}@${step}`
  eventsAfter: 0,
  events: [],
  ticks: 0,
};

let charts;
let timeline;
let graph;

const nameOf = (id) => state.names.get(id) || shortId(id);
const byName = (a, b) => (a.name || a.id).localeCompare(b.name || b.id);

// -- header: connection status, the token, notices ---------------------------------------------------
function showStatus(kind, text) {
  const el = $('#server-status');
  el.dataset.state = kind;
  el.textContent = text;
}

function showBanner(text) {
  const el = $('#banner');
  el.hidden = !text;
  el.textContent = text || '';
}

let noticeTimer;
function notify(kind, text) {
  const el = $('#notice');
  el.dataset.kind = kind;
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 10000);
}

function showAuth() {
  const signedIn = Boolean(token());
  $('#auth-anonymous').hidden = signedIn;
  $('#auth-signed-in').hidden = !signedIn;
  document.body.classList.toggle('anonymous', !signedIn);
}

async function act(path, what) {
  for (const b of document.querySelectorAll('button.action')) b.disabled = true;
  try {
    await post(path);
    notify('ok', `${what}: done`);
  } catch (err) {
    const hint = err.status === 401 ? ' (the token was refused: paste another)'
      : err.status === 403 ? ' (this token\'s role may not do that)' : '';
    notify('error', `${what} failed: ${err.message}${hint}`);
  } finally {
    if (refreshing) await refreshing; // began before the action: look again
    await refresh();
  }
}

function actionButton(label, path, what, enabled = true) {
  const button = h('button', { class: 'action', type: 'button', disabled: !enabled, dataset: { action: label } },
    label);
  button.addEventListener('click', () => act(path, what));
  return button;
}

// -- the fleet ---------------------------------------------------------------------------------------
function hardware(hw) {
  if (!hw) return '–';
  return [
    `${hw.cpu_cores} cores · ${bytes(hw.memory_bytes)} · ${hw.device}`,
    h('div', { class: 'muted small' }, `budget ${bytes(hw.memory_budget_bytes)} · ${hw.threads} threads`),
  ];
}

function pnodeActions(p) {
  if (!token()) return [];
  const path = (what) => `api/pnodes/${enc(p.id)}/${what}`;
  const who = p.name || shortId(p.id);
  return [
    p.trusted ? actionButton('untrust', path('untrust'), `untrust ${who}`)
      : actionButton('trust', path('trust'), `trust ${who}`),
    p.state === 'quarantined' ? actionButton('release', path('release'), `release ${who} from quarantine`) : null,
  ];
}

function renderFleet(o) {
  const counts = {};
  for (const p of o.pnodes) counts[p.state] = (counts[p.state] || 0) + 1;
  $('#fleet-summary').textContent = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(' · ');
  const rows = [...o.pnodes].sort(byName).map((p) => h('tr', { class: `state-${p.state}`, dataset: { pnode: p.id,
    name: p.name, state: p.state } },
  h('td', { title: p.id }, h('span', { class: 'swatch', style: { background: colourOf(p.id) } }),
    h('strong', {}, p.name || shortId(p.id)), p.address ? h('div', { class: 'muted small' }, p.address) : null),
  h('td', {}, h('span', { class: `badge ${p.state}` }, p.state),
    p.quarantined_until ? h('div', { class: 'muted small' }, `until ${clock(p.quarantined_until)}`) : null),
  h('td', { class: 'connection' }, p.connection),
  h('td', {}, p.trusted ? 'trusted' : 'untrusted',
    p.charges ? h('div', { class: 'muted small' }, `${p.charges} charge${p.charges === 1 ? '' : 's'}`) : null),
  h('td', {}, hardware(p.hardware)),
  h('td', { class: 'num', title: 'queued work' }, number(p.load, 2)),
  h('td', { class: 'num', title: p.vnodes.join('\n') }, p.vnodes.length),
  h('td', { class: 'num', title: 'compute seconds contributed' }, duration(p.compute_seconds)),
  h('td', {}, ago(p.last_seen, o.time)),
  h('td', { class: 'actions' }, pnodeActions(p))));
  replaceRows($('#pnodes tbody'), rows, 'no PNode has joined yet', 10);
}

function renderRelays(o) {
  const rows = o.relays.map((r) => h('tr', { dataset: { relay: r.id, state: r.state } },
    h('td', { title: r.id }, shortId(r.id)), h('td', {}, r.address),
    h('td', {}, h('span', { class: `badge ${r.state}` }, r.state)),
    h('td', { title: r.pnodes.map(nameOf).join('\n') }, `${r.attached} attached`),
    h('td', { class: 'num' }, bytes(r.bytes_forwarded)), h('td', { class: 'num' }, bytes(r.hop_bytes))));
  replaceRows($('#relay-table tbody'), rows, 'no relay (PNodes behind NAT use the orchestrator\'s own)', 6);
}

// -- sessions and their charts -----------------------------------------------------------------------
function renderSessions(o) {
  const chosen = $('#session-select').value;
  const rows = o.sessions.map((s) => {
    const actions = token() ? [
      actionButton('suspend', `api/sessions/${enc(s.id)}/suspend`, `suspend ${s.id}`,
        s.state === 'running' || s.state === 'created'),
      actionButton('resume', `api/sessions/${enc(s.id)}/resume`, `resume ${s.id}`,
        s.state === 'suspended' || s.state === 'created'),
    ] : [];
    return h('tr', { class: s.id === chosen ? 'chosen' : '', dataset: { session: s.id, state: s.state },
      onclick: (ev) => { if (ev.target.tagName !== 'BUTTON') chooseSession(s.id); } },
    h('td', {}, s.id), h('td', {}, s.network), h('td', {}, s.dataset),
    h('td', {}, h('span', { class: `badge ${s.state}` }, s.state)),
    h('td', {}, h('progress', { max: s.steps || 1, value: s.step }), ` ${s.step} / ${s.steps}`),
    h('td', {}, s.validation === true ? 'on' : s.validation === false ? 'off' : String(s.validation)),
    h('td', { class: 'actions' }, actions));
  });
  replaceRows($('#session-table tbody'), rows, 'no session yet', 7);
  const options = o.sessions.map((s) => [s.id, `${s.id} (${s.network}, ${s.state})`]);
  let want = fillSelect($('#session-select'), options);
  if (!charts.session && options.length) { // nothing chosen yet: a running session, else the newest
    const running = o.sessions.find((s) => s.state === 'running');
    want = running ? running.id : options[options.length - 1][0];
  }
  if (want !== charts.session) chooseSession(want);
}

function chooseSession(id) {
  $('#session-select').value = id;
  if (charts.session !== id) {
    charts.session = id;
    charts.reset();
    state.timelineKey = '';
    timeline.clear();
    $('#timeline-step').value = '';
  }
  for (const row of document.querySelectorAll('#session-table tbody tr')) {
    row.classList.toggle('chosen', row.dataset.session === id);
  }
}

async function refreshHistory(o) {
  const id = charts.session;
  if (!id) return;
  const session = o.sessions.find((s) => s.id === id);
  if (session && charts.last && session.step < charts.last.step) { // rolled back to a checkpoint: redraw
    charts.reset();
    state.timelineKey = '';
  }
  const points = await get(`api/sessions/${enc(id)}/history?from_step=${charts.nextStep}`);
  if (charts.session !== id) return; // another session was chosen meanwhile
  charts.append(points);
  const p = charts.last;
  $('#session-summary').textContent = p ? `step ${p.step}: loss ${number(p.loss, 4)}`
    + `${p.held_out_loss !== null && p.held_out_loss !== undefined ? `, held-out ${number(p.held_out_loss, 4)}` : ''}`
    + `, ${number(p.tokens_per_second)} tokens/s, ${number(p.duration_seconds)} s per step` : 'no step yet';
  const steps = charts.recentSteps(KEPT_STEPS).reverse();
  fillSelect($('#timeline-step'), [['', 'newest'], ...steps.map((s) => [String(s), String(s)])]);
}

// -- the step timeline -------------------------------------------------------------------------------
async function refreshTimeline(force = false) {
  const id = charts.session;
  if (!id) return;
  const step = $('#timeline-step').value;
  const key = `${id}@${step || (charts.last ? `newest:${charts.last.step}` : 'newest')}`;
  if (key === state.timelineKey && !force) return;
  state.timelineKey = key;
  try {
    const t = await get(`api/sessions/${enc(id)}/timeline${step ? `?step=${enc(step)}` : ''}`);
    if (charts.session !== id) return;
    timeline.show(t, nameOf);
    const end = Math.max(0, ...t.spans.map((s) => s.end), ...t.wire.map((w) => w.end));
    const busy = new Map();
    for (const s of t.spans) busy.set(s.pnode, (busy.get(s.pnode) || 0) + s.end - s.start);
    const wire = t.wire.reduce((sum, w) => sum + w.end - w.start, 0);
    const sent = t.wire.reduce((sum, w) => sum + w.bytes, 0);
    $('#timeline-summary').textContent = `step ${t.step}: ${number(end)} s; computing `
      + `${[...busy].map(([p, s]) => `${nameOf(p)} ${number(s)} s`).join(', ') || 'nothing'}; on the wire `
      + `${number(wire)} s in ${t.wire.length} transfers, ${bytes(sent)}`;
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
    timeline.clear();
    $('#timeline-summary').textContent = step ? `step ${step} is no longer kept` : 'no step timeline yet';
  }
}

// -- networks ----------------------------------------------------------------------------------------
async function refreshGraph(o) {
  const options = o.networks.map((n) => [n.name, `${n.name} (${n.vnodes} VNodes, step ${n.step})`]);
  const name = fillSelect($('#network-select'), options);
  if (!name) {
    graph.clear();
    return;
  }
  const placement = JSON.stringify(o.pnodes.map((p) => [p.id, p.state, p.vnodes]));
  if (name === state.graphOf && placement === state.placement && state.ticks % 15 !== 0) return;
  const g = await get(`api/networks/${enc(name)}/graph`);
  state.graphOf = name;
  state.placement = placement;
  graph.show(g, nameOf);
  const hosts = new Set(g.nodes.map((n) => n.pnode).filter(Boolean));
  $('#network-summary').textContent = `${g.nodes.length} VNodes on ${hosts.size} PNode${hosts.size === 1 ? '' : 's'}`;
}

// -- logs --------------------------------------------------------------------------------------------
async function refreshValidation() {
  const events = await get('api/validation?limit=50');
  const rows = [...events].sort((a, b) => b.seq - a.seq).map((v) => h('tr', { class: `verdict-${v.verdict}`,
    dataset: { seq: v.seq } },
  h('td', { class: 'when' }, clock(v.at)), h('td', {}, v.session), h('td', { class: 'num' }, v.step),
  h('td', {}, v.unit),
  h('td', {}, v.accused ? nameOf(v.accused) : '–'), h('td', {}, v.verifier ? nameOf(v.verifier) : '–'),
  h('td', {}, v.referee ? nameOf(v.referee) : '–'),
  h('td', {}, h('span', { class: `badge ${v.verdict}` }, v.verdict)),
  h('td', { class: 'detail' }, v.detail)));
  replaceRows($('#validation-table tbody'), rows, 'nothing checked yet', 9);
}

async function refreshEvents() {
  const fresh = await get(`api/events?after=${state.eventsAfter}`);
  if (fresh.length) {
    state.eventsAfter = Math.max(state.eventsAfter, ...fresh.map((e) => e.seq));
    state.events = [...fresh.reverse(), ...state.events].slice(0, 30);
  }
  const rows = state.events.map((e) => h('tr', { dataset: { kind: e.kind } },
    h('td', { class: 'when' }, clock(e.at)),
    h('td', {}, h('span', { class: `badge ${e.kind}` }, e.kind)), h('td', {}, e.pnode ? nameOf(e.pnode) : '–'),
    h('td', { class: 'detail' }, e.detail)));
  replaceRows($('#event-table tbody'), rows, 'no event yet', 4);
}

// -- the polling loop --------------------------------------------------------------------------------
let refreshing = null;

function refresh() {
  refreshing ??= poll().finally(() => { refreshing = null; });
  return refreshing;
}

async function poll() {
  let o;
  try {
    o = await get('api/overview');
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      showStatus('private', 'private');
      showBanner(token() ? `The orchestrator refused this token (${err.message}): forget it and paste another.`
        : 'This orchestrator is private: paste a token to see it.');
    } else {
      showStatus('down', 'unreachable');
      showBanner(`Cannot read the orchestrator: ${err.message}. Retrying every ${POLL_MS / 1000} s.`);
    }
    return;
  }
  showBanner('');
  state.overview = o;
  state.ticks += 1;
  for (const p of [...o.pnodes].sort(byName)) { // colours handed out by name: p0 gets the first
    state.names.set(p.id, p.name || shortId(p.id));
    colourOf(p.id);
  }
  $('#version').textContent = `v${o.version}`;
  renderFleet(o);
  renderRelays(o);
  renderSessions(o);
  const jobs = [refreshHistory(o).then(() => refreshTimeline()), refreshGraph(o)];
  if (state.ticks % 2 === 1) jobs.push(refreshValidation(), refreshEvents());
  const failed = (await Promise.allSettled(jobs)).filter((r) => r.status === 'rejected');
  for (const r of failed) console.warn('dashboard:', r.reason);
  showStatus(failed.length ? 'partial' : 'live', `${failed.length ? 'partly updated' : 'live'} · ${clock(o.time)}`);
}

async function loop() {
  await refresh();
  setTimeout(loop, POLL_MS);
}

function start() {
  charts = new SessionCharts($('#loss-chart'), $('#lr-chart'), $('#throughput-chart'));
  timeline = new TimelineChart($('#timeline-chart'));
  graph = new GraphView($('#graph'), $('#graph-legend'), $('#graph-info'));
  const about = $('#about');
  about.dataset.chartjs = CHART_JS_VERSION;
  about.dataset.cytoscape = CYTOSCAPE_VERSION;
  about.textContent = `Charts by Chart.js ${CHART_JS_VERSION}, graphs by cytoscape ${CYTOSCAPE_VERSION} `
    + '(bundled with this page: it loads nothing from elsewhere).';
  showAuth();
  $('#auth').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('#token-input').value.trim();
    if (!value) return;
    setToken(value);
    $('#token-input').value = '';
    showAuth();
    refresh();
  });
  $('#token-forget').addEventListener('click', () => {
    forgetToken();
    showAuth();
    refresh();
  });
  $('#session-select').addEventListener('change', (ev) => {
    chooseSession(ev.target.value);
    refresh();
  });
  $('#timeline-step').addEventListener('change', () => refreshTimeline(true).catch((err) => notify('error',
    `timeline: ${err.message}`)));
  $('#network-select').addEventListener('change', () => {
    state.graphOf = '';
    refresh();
  });
  loop();
}

start();
