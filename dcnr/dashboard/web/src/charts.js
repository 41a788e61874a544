// Chart.js configurations: a session's loss, learning-rate and throughput charts (points are appended as
// the history grows), and the step timeline as a Gantt chart of floating bars.
import {
  BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, LineController, LineElement, PointElement,
  Tooltip,
} from 'chart.js';
import ChartDataLabels from 'chartjs-plugin-datalabels';

import { bytes, number } from './util.js';

Chart.register(BarController, BarElement, CategoryScale, Legend, LinearScale, LineController, LineElement,
  PointElement, Tooltip);
export const CHART_JS_VERSION = Chart.version; // as the library reports itself (the page's footer shows it)
Chart.defaults.animation = false; // points arrive every two seconds; animating them only costs CPU
Chart.defaults.maintainAspectRatio = false;
Chart.defaults.font.family = 'system-ui, sans-serif';
Chart.defaults.font.size = 11;

const SERIES = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7',
  '#9c755f', '#bab0ac'];

function series(label, colour, extra = {}) {
  return { label, data: [], borderColor: colour, backgroundColor: colour, borderWidth: 1.5, pointRadius: 0,
    pointHitRadius: 6, ...extra };
}

function lineChart(figure, datasets, scales) {
  return new Chart(figure.querySelector('canvas'), {
    type: 'line',
    data: { datasets },
    options: {
      parsing: false,
      normalized: true,
      interaction: { mode: 'nearest', axis: 'x', intersect: false },
      plugins: { legend: { labels: { boxWidth: 10 } } },
      scales: { x: { type: 'linear', title: { display: true, text: 'step' }, ticks: { precision: 0 } }, ...scales },
    },
  });
}

export class SessionCharts {
  constructor(lossFigure, lrFigure, throughputFigure) {
    this.figures = { loss: lossFigure, lr: lrFigure, throughput: throughputFigure };
    this.session = ''; // the session whose history is shown
    this.loss = lineChart(lossFigure, [series('loss', SERIES[0]),
      series('held-out loss', SERIES[1], { pointRadius: 2 })], { y: { title: { display: true, text: 'loss' } } });
    this.lr = lineChart(lrFigure, [], {
      y: { title: { display: true, text: 'learning rate' }, ticks: { callback: (v) => Number(v).toExponential(1) } },
    });
    this.throughput = lineChart(throughputFigure, [series('tokens/s', SERIES[2]),
      series('step seconds', SERIES[3], { yAxisID: 'seconds' })], {
      y: { title: { display: true, text: 'tokens/s' }, beginAtZero: true },
      seconds: { position: 'right', title: { display: true, text: 'seconds per step' }, beginAtZero: true,
        grid: { drawOnChartArea: false } },
    });
    this.reset();
  }

  reset() {
    this.nextStep = 0; // history is fetched from here on
    this.last = null;
    for (const chart of [this.loss, this.throughput]) for (const d of chart.data.datasets) d.data = [];
    this.lr.data.datasets = [];
    this.lrByVNode = new Map();
    this.update();
  }

  append(points) {
    for (const p of points) {
      if (p.step < this.nextStep) continue; // already shown
      this.loss.data.datasets[0].data.push({ x: p.step, y: p.loss });
      if (p.held_out_loss !== null && p.held_out_loss !== undefined) {
        this.loss.data.datasets[1].data.push({ x: p.step, y: p.held_out_loss });
      }
      for (const [vnode, lr] of Object.entries(p.learning_rates || {})) {
        if (!this.lrByVNode.has(vnode)) {
          const d = series(vnode, SERIES[this.lrByVNode.size % SERIES.length]);
          this.lrByVNode.set(vnode, d);
          this.lr.data.datasets.push(d);
        }
        this.lrByVNode.get(vnode).data.push({ x: p.step, y: lr });
      }
      this.throughput.data.datasets[0].data.push({ x: p.step, y: p.tokens_per_second });
      this.throughput.data.datasets[1].data.push({ x: p.step, y: p.duration_seconds });
      this.nextStep = p.step + 1;
      this.last = p;
    }
    if (points.length) this.update();
  }

  recentSteps(count) {
    return this.loss.data.datasets[0].data.slice(-count).map((point) => point.x);
  }

  update() {
    this.lr.options.plugins.legend.display = this.lr.data.datasets.length <= 8;
    for (const chart of [this.loss, this.lr, this.throughput]) chart.update('none');
    this.figures.loss.dataset.points = this.loss.data.datasets[0].data.length;
    this.figures.lr.dataset.points = Math.max(0, ...this.lr.data.datasets.map((d) => d.data.length));
    this.figures.throughput.dataset.points = this.throughput.data.datasets[0].data.length;
  }
}

const OPS = [['fwd', 'forward', '#4e79a7'], ['bwd', 'backward', '#f28e2b'], ['update', 'update', '#59a14f']];
const WIRE = '#9aa3ad';

export class TimelineChart {
  constructor(figure) {
    this.figure = figure;
    const datasets = [...OPS, ['wire', 'on the wire', WIRE]].map(([key, label, colour]) => ({
      key, label, data: [], backgroundColor: colour, borderColor: colour, grouped: false, borderSkipped: false,
      barPercentage: key === 'wire' ? 0.5 : 0.8, categoryPercentage: 1,
    }));
    this.chart = new Chart(figure.querySelector('canvas'), {
      type: 'bar',
      plugins: [ChartDataLabels],
      data: { labels: [], datasets },
      options: {
        indexAxis: 'y',
        parsing: { xAxisKey: 'x', yAxisKey: 'y' },
        scales: {
          x: { type: 'linear', beginAtZero: true, title: { display: true, text: 'ms since the step began' } },
          y: { type: 'category' },
        },
        plugins: {
          legend: { labels: { boxWidth: 10 } },
          tooltip: { callbacks: { label: (ctx) => describe(ctx.raw) } },
          datalabels: {
            color: '#fff', font: { size: 10 }, clip: true, anchor: 'center', align: 'center',
            formatter: (raw) => (raw.op === 'wire' ? '' : raw.vnode),
            display: (ctx) => {
              const raw = ctx.dataset.data[ctx.dataIndex];
              const scale = ctx.chart.scales.x;
              const width = scale.getPixelForValue(raw.x[1]) - scale.getPixelForValue(raw.x[0]);
              return raw.op !== 'wire' && width > 7 * raw.vnode.length;
            },
          },
        },
      },
    });
  }

  show(timeline, nameOf) {
    // rows: one per PNode (what it computed), then one per link that carried something (the time on the wire)
    const rows = timeline.pnodes.map((id) => nameOf(id));
    const links = new Map();
    for (const w of timeline.wire) {
      const label = `${nameOf(w.from)} → ${nameOf(w.to)}`;
      if (!links.has(label)) links.set(label, []);
      links.get(label).push(w);
    }
    this.chart.data.labels = [...rows, ...links.keys()];
    for (const d of this.chart.data.datasets) d.data = [];
    const byKey = Object.fromEntries(this.chart.data.datasets.map((d) => [d.key, d]));
    for (const s of timeline.spans) {
      (byKey[s.op] || byKey.fwd).data.push({ x: [s.start * 1000, s.end * 1000], y: nameOf(s.pnode), vnode: s.vnode,
        op: s.op, micro_batch: s.micro_batch, pnode: nameOf(s.pnode) });
    }
    for (const [label, ws] of links) {
      for (const w of ws) {
        byKey.wire.data.push({ x: [w.start * 1000, w.end * 1000], y: label, vnode: w.vnode, op: 'wire',
          sent: w.op, micro_batch: w.micro_batch, bytes: w.bytes });
      }
    }
    this.figure.querySelector('.plot').style.height = `${70 + 26 * Math.max(1, this.chart.data.labels.length)}px`;
    this.chart.resize();
    this.chart.update('none');
    this.figure.dataset.spans = timeline.spans.length;
    this.figure.dataset.wire = timeline.wire.length;
    this.figure.dataset.step = timeline.step;
  }

  clear() {
    this.chart.data.labels = [];
    for (const d of this.chart.data.datasets) d.data = [];
    this.chart.update('none');
    this.figure.dataset.spans = 0;
    this.figure.dataset.wire = 0;
    delete this.figure.dataset.step;
  }
}

function describe(raw) {
  const ms = `${number(raw.x[0])}–${number(raw.x[1])} ms (${number(raw.x[1] - raw.x[0])} ms)`;
  if (raw.op === 'wire') return `${raw.vnode} ${raw.sent} micro-batch ${raw.micro_batch}: ${bytes(raw.bytes)}, ${ms}`;
  return `${raw.vnode} ${raw.op} micro-batch ${raw.micro_batch} on ${raw.pnode}: ${ms}`;
}
