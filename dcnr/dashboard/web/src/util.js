// Small DOM and formatting helpers. Text from the server (PNode names chosen by volunteers, error details)
// only ever becomes text nodes, never markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'style') Object.assign(el.style, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function replaceRows(tbody, rows, empty, columns) {
  if (rows.length === 0) rows = [h('tr', { class: 'empty' }, h('td', { colspan: columns }, empty))];
  tbody.replaceChildren(...rows);
}

export function fillSelect(select, options, keep = true) {
  // options: [[value, label]]; keeps the chosen value when it is still offered
  const before = select.value;
  const same = select.options.length === options.length
    && options.every(([value, label], i) => select.options[i].value === value && select.options[i].text === label);
  if (!same) select.replaceChildren(...options.map(([value, label]) => h('option', { value }, label)));
  if (keep && options.some(([value]) => value === before)) select.value = before;
  return select.value;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${UNITS[i]}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function ago(at, now) {
  if (!at) return 'never';
  const s = Math.max(0, now - at);
  return s < 1 ? 'just now' : `${duration(s)} ago`;
}

export function clock(at) {
  if (!at) return '–';
  const when = new Date(at * 1000);
  return Math.abs(Date.now() - when) > 12 * 3600 * 1000 ? when.toLocaleString() : when.toLocaleTimeString();
}

export function number(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  return Math.abs(x) >= 1000 ? Math.round(x).toLocaleString() : Number(x.toPrecision(digits)).toString();
}

export function shortId(id) {
  return id.length > 14 ? `${id.slice(0, 12)}…` : id;
}

// PNode colours, shared by the fleet table, the network graph and the timeline: a PNode keeps its colour
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7',
  '#9c755f', '#bab0ac', '#1f77b4', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#17becf'];
const colours = new Map();
export const UNPLACED = '#d0d4da';

export function colourOf(pnodeId) {
  if (!pnodeId) return UNPLACED;
  if (!colours.has(pnodeId)) colours.set(pnodeId, PALETTE[colours.size % PALETTE.length]);
  return colours.get(pnodeId);
}
