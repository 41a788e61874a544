// A network's executed graph drawn with cytoscape: one box per VNode, filled with its PNode's colour.
import cytoscape from 'cytoscape';

import { colourOf, h, UNPLACED } from './util.js';

const STYLE = [
  {
    selector: 'node',
    style: {
      shape: 'round-rectangle', 'background-color': 'data(colour)', label: 'data(label)', 'text-wrap': 'wrap',
      'text-valign': 'center', 'font-size': 10, color: '#111', width: 'data(width)', height: 30,
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
  constructor(container, legend) {
    this.container = container;
    this.legend = legend;
    this.cy = cytoscape({ container, style: STYLE, boxSelectionEnabled: false });
    this.shape = ''; // the nodes and edges drawn: only a new shape is laid out again
  }

  show(graph, nameOf) {
    const shape = JSON.stringify([graph.nodes.map((n) => n.id), graph.edges]);
    if (shape !== this.shape) {
      this.cy.elements().remove();
      this.cy.add([
        ...graph.nodes.map((n) => ({ data: { id: n.id, label: `${n.id}\n${n.type}`, colour: colourOf(n.pnode),
          width: 12 + 6 * Math.max(n.id.length, n.type.length) } })),
        ...graph.edges.map((e, i) => ({ data: { id: `e${i}`, source: e.from, target: e.to } })),
      ]);
      this.cy.layout({ name: 'breadthfirst', directed: true, spacingFactor: 0.9, padding: 10 }).run();
      this.shape = shape;
    }
    for (const n of graph.nodes) this.cy.getElementById(n.id).data('colour', colourOf(n.pnode));
    const placed = new Map();
    for (const n of graph.nodes) placed.set(n.pnode || '', (placed.get(n.pnode || '') || 0) + 1);
    this.legend.replaceChildren(...[...placed].map(([pnode, count]) => h('li', {},
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
