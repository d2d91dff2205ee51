// The nodes page, for those allowed to list Nodes: each node's capacity, what is allocated on
// it, its conditions and the Instances it runs, kept current by the watch streams of Nodes and
// of Instances in every namespace.
//
// "Allocated" is counted as the scheduler counts it (stratus_controllers::scheduler, restated
// in cli/src/allocation.rs for `stratus describe node`): the requests of the serving container
// of every Instance bound to the node (`spec.nodeName`) that has not finished (phase Succeeded
// or Failed); a request left out is its limit. Quantities are read exactly, with BigInt.

import * as api from './api.js';
import {h, replace} from './dom.js';

/**
 * Whether the session may list Nodes: asks the API for one. Anything but a success (403 for a
 * tenant's user) means no.
 */
export async function allowed() {
  try {
    await api.request('GET', `${api.collection('nodes', '')}?limit=1`);
    return true;
  } catch {
    return false;
  }
}

/** Renders the page into `main`; returns a function that stops its watches. */
export function render(main) {
  const state = h('p', {id: 'live-state', class: 'live-state', role: 'status', 'aria-live': 'polite'}, 'Connecting…');
  const list = h('div', {id: 'nodes', class: 'nodes'});
  const unplaced = h('div', {id: 'unplaced'});
  replace(main, h('div', {class: 'page-head'}, h('h1', {}, 'Nodes'), state), list, unplaced);

  const data = {nodes: null, instances: new Map()};
  const draw = () => {
    if (!data.nodes) return;
    const byNode = new Map();
    const waiting = [];
    for (const inst of data.instances.values()) {
      const node = inst.spec?.nodeName;
      if (!node) {
        waiting.push(inst);
        continue;
      }
      if (!byNode.has(node)) byNode.set(node, []);
      byNode.get(node).push(inst);
    }
    const nodes = [...data.nodes.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    if (nodes.length === 0) replace(list, h('p', {class: 'notice', id: 'nodes-empty'}, 'No nodes have registered.'));
    else replace(list, nodes.map((n) => nodeCard(n, byNode.get(n.metadata.name) || [])));
    replace(unplaced, waiting.length === 0 ? null : [
      h('h2', {}, 'Instances on no node yet'),
      instancesTable(waiting.sort(byName), 'unplaced-instances', 'Instances the scheduler has not placed'),
    ]);
  };

  const stop = new AbortController();
  const streams = new Map();
  const onState = (name) => (s, error) => {
    streams.set(name, s === 'live' ? null : (error?.message || 'the stream ended'));
    const failing = [...streams.values()].filter(Boolean);
    state.textContent = failing.length === 0 ? 'Live: changes appear as they happen.' : `Reconnecting… (${failing[0]})`;
    state.className = `live-state ${failing.length === 0 ? 'live' : 'reconnecting'}`;
  };
  const follow = () => {
    // Nodes are named uniquely; Instances are keyed by namespace and name.
    api.follow(api.collection('nodes', ''), {
      signal: stop.signal,
      onState: onState('nodes'),
      onChange(objects) {
        data.nodes = objects;
        draw();
      },
    });
    api.follow(api.collection('instances', ''), {
      signal: stop.signal,
      onState: onState('instances'),
      onChange(objects) {
        data.instances = objects;
        draw();
      },
      key: (o) => `${o.metadata.namespace}/${o.metadata.name}`,
    });
  };
  // A watch the API refuses would be retried for ever: ask once whether it is allowed.
  allowed().then((may) => {
    if (stop.signal.aborted) return;
    if (may) {
      follow();
      return;
    }
    state.hidden = true;
    replace(list, h('p', {class: 'notice', id: 'nodes-forbidden'}, 'You may not list Nodes: only cluster admins see them.'));
  });
  return () => stop.abort();
}

function byName(a, b) {
  return `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`);
}

function finished(inst) {
  return ['Succeeded', 'Failed'].includes(inst.status?.phase);
}

function nodeCard(node, instances) {
  const name = node.metadata.name;
  const status = node.status || {};
  const ready = (status.conditions || []).find((c) => c.type === 'Ready');
  const badge = !ready || ready.status === 'Unknown'
    ? h('span', {class: 'badge pending'}, 'Unknown')
    : ready.status === 'True' ? h('span', {class: 'badge ready'}, 'Ready') : h('span', {class: 'badge failed'}, 'Not ready');
  const holding = instances.filter((i) => !finished(i));
  const requested = holding.reduce((sum, i) => {
    const r = requestsOf(i);
    return {cpu: sum.cpu + r.cpu, memory: sum.memory + r.memory};
  }, {cpu: 0n, memory: 0n});
  const allocated = {cpu: formatCpu(requested.cpu), memory: formatMemory(requested.memory), instances: String(holding.length)};
  const used = {cpu: requested.cpu, memory: requested.memory, instances: BigInt(holding.length)};
  const resources = ['cpu', 'memory', 'instances'];
  const read = (map, r) => {
    const q = parseQuantity(map?.[r]);
    if (q === null) return null;
    return r === 'cpu' ? ceilMillis(q) : ceilUnits(q);
  };
  return h('section', {class: 'node', 'data-node': name, 'aria-labelledby': `node-${name}`},
    h('div', {class: 'page-head'},
      h('h2', {id: `node-${name}`}, name), badge,
      node.spec?.unschedulable ? h('span', {class: 'badge pending'}, 'Cordoned: nothing new is placed here') : null,
      status.nodeInfo?.containerRuntimeVersion ? h('span', {class: 'notice'}, status.nodeInfo.containerRuntimeVersion) : null),
    h('div', {class: 'table-wrap'}, h('table', {class: 'node-resources', id: `resources-${name}`},
      h('caption', {}, `Resources of ${name}`),
      h('thead', {}, h('tr', {}, ['Resource', 'Capacity', 'Allocatable', 'Allocated (requests)'].map((c, i) => h('th', {scope: 'col', class: i ? 'num' : null}, c)))),
      h('tbody', {}, resources.map((r) => {
        const of = read(status.allocatable, r);
        const percent = of !== null && of > 0n ? ` (${(used[r] * 100n) / of}%)` : '';
        return h('tr', {'data-resource': r},
          h('th', {scope: 'row', 'data-label': 'Resource'}, r),
          h('td', {class: 'num', 'data-label': 'Capacity'}, status.capacity?.[r] ?? '—'),
          h('td', {class: 'num', 'data-label': 'Allocatable'}, status.allocatable?.[r] ?? '—'),
          h('td', {class: 'num', 'data-label': 'Allocated (requests)'}, `${allocated[r]}${percent}`));
      })))),
    h('h3', {}, 'Conditions'),
    (status.conditions || []).length === 0 ? h('p', {class: 'notice'}, 'No conditions reported.')
      : h('ul', {class: 'conditions'}, status.conditions.map((c) => h('li', {'data-condition': c.type},
        h('span', {class: `badge ${conditionClass(c)}`}, `${c.type}: ${c.status}`),
        [c.reason, c.message].filter(Boolean).length ? h('span', {class: 'why'}, [c.reason, c.message].filter(Boolean).join(': ')) : null))),
    h('h3', {}, `Instances (${holding.length}${instances.length > holding.length ? `, and ${instances.length - holding.length} finished` : ''})`),
    instances.length === 0 ? h('p', {class: 'notice'}, 'No instances on this node.')
      : instancesTable(instances.sort(byName), `instances-${name}`, `Instances on ${name}`));
}

/** Ready and the like are good when True; pressure conditions are good when False. */
function conditionClass(c) {
  if (c.status === 'Unknown') return 'pending';
  const good = c.type === 'Ready' ? 'True' : 'False';
  return c.status === good ? 'ready' : 'failed';
}

function instancesTable(instances, id, caption) {
  return h('div', {class: 'table-wrap'}, h('table', {id, class: 'node-instances'},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, ['Instance', 'Service', 'Revision', 'Phase', 'Ready', 'CPU', 'Memory', 'Address'].map((c) => h('th', {scope: 'col', class: ['CPU', 'Memory'].includes(c) ? 'num' : null}, c)))),
    h('tbody', {}, instances.map((inst) => {
      const r = requestsOf(inst);
      const status = inst.status || {};
      const key = `${inst.metadata.namespace}/${inst.metadata.name}`;
      return h('tr', {'data-instance': key},
        h('th', {scope: 'row', 'data-label': 'Instance'}, key),
        h('td', {'data-label': 'Service'}, inst.spec?.serviceName || '—'),
        h('td', {'data-label': 'Revision'}, inst.spec?.revisionName || '—'),
        h('td', {'data-label': 'Phase'}, status.phase || 'Pending', status.reason ? h('span', {class: 'why'}, status.reason) : null),
        h('td', {'data-label': 'Ready'}, status.ready ? 'yes' : 'no'),
        h('td', {class: 'num', 'data-label': 'CPU'}, formatCpu(r.cpu)),
        h('td', {class: 'num', 'data-label': 'Memory'}, formatMemory(r.memory)),
        h('td', {'data-label': 'Address'}, status.address || '—'));
    }))));
}

// ---------------------------------------------------------------- requests and quantities

/**
 * What one Instance asks of its node: its serving container's requests (the first container
 * with a port, else the first), a request left out being its limit. Millicores and bytes.
 */
function requestsOf(inst) {
  const containers = inst.spec?.containers || [];
  const serving = containers.find((c) => (c.ports || []).length > 0) || containers[0];
  const res = serving?.resources || {};
  const amount = (r) => {
    const q = parseQuantity(res.requests?.[r] ?? res.limits?.[r]);
    if (q === null) return 0n;
    return r === 'cpu' ? ceilMillis(q) : ceilUnits(q);
  };
  return {cpu: amount('cpu'), memory: amount('memory')};
}

const BINARY = {Ki: 10n, Mi: 20n, Gi: 30n, Ti: 40n, Pi: 50n, Ei: 60n};
const DECIMAL = {n: -9, u: -6, m: -3, '': 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18};

/**
 * A Kubernetes quantity (`500m`, `1.5`, `512Mi`, `1e3`) as an exact fraction [numerator,
 * denominator] of BigInts; null when absent, negative or not a quantity.
 */
export function parseQuantity(text) {
  if (typeof text !== 'string') return null;
  const m = /^\+?(\d+(?:\.\d*)?|\.\d+)(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$/.exec(text.trim());
  if (!m) return null;
  const [int, frac = ''] = m[1].split('.');
  let num = BigInt(`${int || '0'}${frac}`);
  let den = 10n ** BigInt(frac.length);
  if (m[2]) {
    const exp = Number(m[2].slice(1));
    if (exp >= 0) num *= 10n ** BigInt(exp);
    else den *= 10n ** BigInt(-exp);
  } else if (m[3] && BINARY[m[3]] !== undefined) {
    num *= 2n ** BINARY[m[3]];
  } else {
    const exp = DECIMAL[m[3] || ''];
    if (exp >= 0) num *= 10n ** BigInt(exp);
    else den *= 10n ** BigInt(-exp);
  }
  return [num, den];
}

function ceilDiv(a, b) {
  return (a + b - 1n) / b;
}

function ceilMillis([num, den]) {
  return ceilDiv(num * 1000n, den);
}

function ceilUnits([num, den]) {
  return ceilDiv(num, den);
}

/** Millicores as Kubernetes writes cpu: `150m`, `2`. */
function formatCpu(millis) {
  return millis % 1000n === 0n ? String(millis / 1000n) : `${millis}m`;
}

/** Bytes in the largest binary unit they fill exactly (`1536Mi`), else in bytes. */
function formatMemory(bytes) {
  if (bytes === 0n) return '0';
  for (const [suffix, shift] of Object.entries(BINARY).reverse()) {
    const unit = 2n ** shift;
    if (bytes % unit === 0n) return `${bytes / unit}${suffix}`;
  }
  return String(bytes);
}
