// A network's executed graph drawn with cytoscape: one box per VNode, filled with its PNode's colour.
import cytoscape from 'cytoscape';
import dagre from 'cytoscape-dagre';

import { colourOf, h, UNPLACED } from './util.js';

cytoscape.use(dagre);
export const CYTOSCAPE_VERSION = cytoscape.version;

const STYLE = [
  {
    selector: 'node',
    style: {
      shape: 'round-rectangle', 'background-color': 'data(colour)', label: 'data(label)', 'text-wrap': 'wrap',
      'text-valign': 'center', 'font-size': 11, color: '#111', width: 'data(width)', height: 24,
      'border-width': 1, 'border-color': '#5f6b7a',
    },
  },
  {
    selector: 'edge',
    style: {
      width: 1.2, 'line-color': '#8a96a3', 'target-arrow-color': '#8a96a3', 'target-arrow-shape': 'triangle',
      'curve-style': 'bezier', 'arrow-scale': 0.8,
    },
  },
];

export class GraphView {
  constructor(container, legend, info) {
    this.container = container;
    this.legend = legend;
    this.cy = cytoscape({ container, style: STYLE, boxSelectionEnabled: false, minZoom: 0.1, maxZoom: 4 });
    this.hosts = new Map(); // VNode -> the name of its PNode
    this.cy.on('tap', 'node', (ev) => {
      const n = ev.target;
      info.textContent = `${n.id()} (${n.data('type')}) on ${this.hosts.get(n.id())}`;
    });
    this.shape = ''; // the nodes and edges drawn: only a new shape is laid out again
  }

  show(graph, nameOf) {
    const shape = JSON.stringify([graph.nodes.map((n) => n.id), graph.edges]);
    if (shape !== this.shape) {
      this.cy.elements().remove();
      this.cy.add([
        ...graph.nodes.map((n) => ({ data: { id: n.id, label: n.id, type: n.type, colour: colourOf(n.pnode),
          width: 14 + 6.5 * n.id.length } })),
        ...graph.edges.map((e, i) => ({ data: { id: `e${i}`, source: e.from, target: e.to } })),
      ]);
      // layered from the inputs on the left to the loss on the right: networks are deeper than wide
      this.cy.layout({ name: 'dagre', rankDir: 'LR', nodeSep: 10, rankSep: 24, padding: 10 }).run();
      const box = this.cy.elements().boundingBox();
      const height = Math.round(this.container.clientWidth * (box.h / Math.max(1, box.w)));
      this.container.style.height = `${Math.min(520, Math.max(160, height + 20))}px`;
      this.cy.resize();
      this.cy.fit(undefined, 10);
      this.shape = shape;
    }
    this.hosts = new Map(graph.nodes.map((n) => [n.id, n.pnode ? nameOf(n.pnode) : 'not placed']));
    for (const n of graph.nodes) this.cy.getElementById(n.id).data('colour', colourOf(n.pnode));
    const placed = new Map();
    for (const n of graph.nodes) placed.set(n.pnode || '', (placed.get(n.pnode || '') || 0) + 1);
    const label = ([pnode]) => (pnode ? nameOf(pnode) : '\uffff'); // by name, the unplaced last
    const entries = [...placed].sort((a, b) => label(a).localeCompare(label(b)));
    this.legend.replaceChildren(...entries.map(([pnode, count]) => h('li', {},
      h('span', { class: 'swatch', style: { background: pnode ? colourOf(pnode) : UNPLACED } }),
      `${pnode ? nameOf(pnode) : 'not placed'} (${count})`)));
    this.container.dataset.nodes = graph.nodes.length;
    this.container.dataset.edges = graph.edges.length;
    this.container.dataset.unplaced = placed.get('') || 0;
  }

  clear() {
    this.cy.elements().remove();
    this.shape = '';
    this.legend.replaceChildren();
    this.container.dataset.nodes = 0;
    this.container.dataset.edges = 0;
  }
}
