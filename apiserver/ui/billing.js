// The billing page of a tenant: its usage per service over time (a chart the page draws, from
// the LedgerEntries), the current preliminary invoice line by line, its past invoices and its
// budgets with their thresholds. Everything is read from the objects the billing controller
// writes (docs/billing.md), kept current by their watch streams.
//
// Money and quantities are shown as the Invoice holds them (exact decimal strings), never
// recomputed in floating point; only the chart and the usage totals are approximations, and
// say so.

import * as api from './api.js';
import {h, replace} from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const HOUR = 3_600_000;

/** What the chart can show, and how a LedgerEntry's counters convert to it. */
const METRICS = {
  cpu: {label: 'vCPU-seconds', of: (spec) => Number(spec.cpuMillicoreMillis || 0) / 1e6},
  memory: {label: 'GiB-seconds', of: (spec) => Number(spec.memoryKibMillis || 0) / (1024 * 1024 * 1000)},
  requests: {label: 'Requests', of: (spec) => Number(spec.requests || 0)},
};

const RANGES = {'24h': ['Last 24 hours', 24], '7d': ['Last 7 days', 24 * 7], '30d': ['Last 30 days', 24 * 30]};

/** Colours of the chart's series (console.css, .series-N), used in turn. */
const SERIES_COLOURS = 8;

/**
 * Renders the billing page of `tenant` into `main` (a cluster admin may pick another tenant:
 * `onTenant(name)` is called with it). Returns a function that stops its watches and timers.
 */
export function render(main, {tenant, mayPickTenant, onTenant}) {
  const state = h('p', {id: 'live-state', class: 'live-state', role: 'status', 'aria-live': 'polite'}, 'Connecting…');
  const head = h('div', {class: 'page-head'}, h('h1', {}, `Billing of tenant ${tenant || '—'}`), state);
  if (!tenant) {
    replace(main, head, h('p', {class: 'notice'}, 'You belong to no tenant, so there is no bill to show.'));
    state.hidden = true;
    return () => {};
  }
  const picker = mayPickTenant ? tenantPicker(tenant, onTenant) : null;

  const metric = h('select', {id: 'usage-metric'},
    Object.entries(METRICS).map(([value, m]) => new Option(m.label, value)));
  const range = h('select', {id: 'usage-range'}, Object.entries(RANGES).map(([value, [label]]) => new Option(label, value)));
  const chart = h('div', {id: 'usage-chart', class: 'chart'});
  const usageTable = h('div', {id: 'usage-totals', class: 'table-wrap'});
  const current = h('div', {id: 'current-invoice'});
  const past = h('div', {id: 'past-invoices'});
  const budgets = h('div', {id: 'budgets'});

  replace(main, head, picker,
    h('section', {class: 'billing-section', 'aria-labelledby': 'usage-title'},
      h('h2', {id: 'usage-title'}, 'Usage per service'),
      h('div', {class: 'controls'},
        h('label', {for: 'usage-metric'}, 'Show'), metric,
        h('label', {for: 'usage-range'}, 'Over'), range),
      chart, usageTable),
    h('section', {class: 'billing-section', 'aria-labelledby': 'current-title'},
      h('h2', {id: 'current-title'}, 'Current invoice (preliminary)'), current),
    h('section', {class: 'billing-section', 'aria-labelledby': 'past-title'},
      h('h2', {id: 'past-title'}, 'Past invoices'), past),
    h('section', {class: 'billing-section', 'aria-labelledby': 'budgets-title'},
      h('h2', {id: 'budgets-title'}, 'Budgets'), budgets));

  /** What the watches hold: only this tenant's objects (an admin's lists hold every tenant's). */
  const data = {entries: null, invoices: null, budgets: null, period: null, currency: ''};
  const ofTenant = (objects) => [...objects.values()].filter((o) => o.spec?.tenant === tenant);

  const drawUsage = () => {
    if (!data.entries) return;
    const hours = RANGES[range.value][1];
    const now = Date.now();
    const end = Math.floor(now / HOUR) * HOUR + HOUR;
    drawChart(chart, usageTable, data.entries, METRICS[metric.value], end - hours * HOUR, end);
  };
  const drawInvoices = () => {
    if (!data.invoices) return;
    const open = currentInvoice(data.invoices, tenant, data.period, Date.now());
    showCurrent(current, open, tenant);
    const others = data.invoices.filter((i) => i !== open.invoice)
      .sort((a, b) => (b.spec?.periodStart || '').localeCompare(a.spec?.periodStart || '') || a.metadata.name.localeCompare(b.metadata.name));
    showPast(past, others);
  };
  const drawBudgets = () => {
    if (data.budgets) showBudgets(budgets, data.budgets, data.invoices ? currency(data.invoices) : '');
  };
  metric.addEventListener('change', drawUsage);
  range.addEventListener('change', drawUsage);

  const stop = new AbortController();
  const streams = new Map();
  const onState = (name) => (s, error) => {
    streams.set(name, s === 'live' ? null : (error?.message || 'the stream ended'));
    const failing = [...streams.values()].filter(Boolean);
    state.textContent = failing.length === 0 ? 'Live: changes appear as they happen.' : `Reconnecting… (${failing[0]})`;
    state.className = `live-state ${failing.length === 0 ? 'live' : 'reconnecting'}`;
  };
  const follow = (plural, name, onChange) => api.follow(api.collection(plural, ''), {signal: stop.signal, onChange, onState: onState(name)});

  follow('ledgerentries', 'usage', (objects) => {
    data.entries = ofTenant(objects);
    drawUsage();
  });
  follow('invoices', 'invoices', (objects) => {
    data.invoices = ofTenant(objects);
    drawInvoices();
    drawBudgets();
  });
  follow('budgets', 'budgets', (objects) => {
    data.budgets = ofTenant(objects).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    drawBudgets();
  });
  // The PriceList says how long a period is, hence which invoice is the current one.
  follow('pricelists', 'prices', (objects) => {
    data.period = objects.get('default')?.spec?.period ?? 'monthly';
    drawInvoices();
  });
  // Hours and periods end while the page is open.
  const tick = setInterval(() => {
    drawUsage();
    drawInvoices();
  }, 30_000);
  return () => {
    stop.abort();
    clearInterval(tick);
  };
}

function tenantPicker(tenant, onTenant) {
  const select = h('select', {id: 'billing-tenant'}, new Option(tenant, tenant));
  api.list(api.collection('tenants', '')).then(({items}) => {
    const names = items.map((t) => t.metadata.name).sort();
    if (!names.includes(tenant)) names.unshift(tenant);
    select.replaceChildren(...names.map((n) => new Option(n, n)));
    select.value = tenant;
  }).catch(() => {
    // Only the tenant shown can be offered.
  });
  select.addEventListener('change', () => onTenant(select.value));
  return h('p', {class: 'controls'}, h('label', {for: 'billing-tenant'}, 'Tenant'), select);
}

// ---------------------------------------------------------------- periods

/**
 * The period holding `at` (ms since the epoch) under a PriceList's `period` ("monthly", or a
 * duration such as "10m"): its key, as invoice names carry it (`2026-12`, `20261204t1910`).
 * The same rule as `stratus_api::billing::Period::holding`. Null when `period` does not read.
 */
export function periodKey(period, at) {
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  const d = new Date(at);
  if (!period || period === 'monthly') return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}`;
  const length = durationMillis(period);
  if (!length) return null;
  const s = new Date(Math.floor(at / length) * length);
  return `${pad(s.getUTCFullYear(), 4)}${pad(s.getUTCMonth() + 1)}${pad(s.getUTCDate())}t${pad(s.getUTCHours())}${pad(s.getUTCMinutes())}`;
}

/** "1h30m", "10m", "90s" in milliseconds (as `stratus_api::duration::parse`); null otherwise. */
function durationMillis(text) {
  const units = {ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: HOUR};
  let total = 0;
  let rest = text;
  while (rest) {
    const m = /^(\d*\.?\d*)(ns|us|µs|ms|s|m|h)/.exec(rest);
    if (!m || m[1] === '' || m[1] === '.') return null;
    total += Number(m[1]) * units[m[2]];
    rest = rest.slice(m[0].length);
  }
  return total > 0 ? total : null;
}

/**
 * The tenant's invoice of the period holding `now`: `{invoice, name, key}`, where `invoice` is
 * null while the period has no usage yet. Without a period to go by, the invoice whose
 * [periodStart, periodEnd) holds `now`.
 */
function currentInvoice(invoices, tenant, period, now) {
  const key = period === null ? null : periodKey(period, now);
  if (key) {
    const name = `${tenant}.${key}`;
    return {invoice: invoices.find((i) => i.metadata.name === name) || null, name, key};
  }
  const invoice = invoices.find((i) => Date.parse(i.spec?.periodStart) <= now && now < Date.parse(i.spec?.periodEnd)) || null;
  return {invoice, name: invoice?.metadata.name || '', key: invoice?.spec?.period || ''};
}

function currency(invoices) {
  return invoices.find((i) => i.spec?.currency)?.spec.currency || '';
}

// ---------------------------------------------------------------- invoices

function phaseOf(invoice) {
  return invoice.status?.phase || 'Open';
}

const LINE_COLUMNS = ['Service', 'Mode', 'Item', 'Quantity', 'Unit', 'Unit price', 'Amount'];

/** The lines of an invoice as a table, with its subtotal, free tier and total at the foot. */
function linesTable(invoice, id) {
  const spec = invoice.spec || {};
  const lines = spec.lines || [];
  const cur = spec.currency || '';
  const credit = (v) => (!v || v.startsWith('-') || /^0(\.0*)?$/.test(v) ? v || '0' : `-${v}`);
  const foot = (label, value, cls) => h('tr', {class: cls, 'data-total': label},
    h('th', {scope: 'row', colspan: 6}, label),
    h('td', {class: 'money', 'data-label': label}, `${value || '0'} ${cur}`));
  return h('div', {class: 'table-wrap'}, h('table', {id, class: 'invoice-lines'},
    h('caption', {}, `Invoice ${invoice.metadata.name}, period ${spec.period || '?'} (${phaseOf(invoice)})`),
    h('thead', {}, h('tr', {}, LINE_COLUMNS.map((c) => h('th', {scope: 'col', class: ['Quantity', 'Unit price', 'Amount'].includes(c) ? 'num' : null}, c)))),
    h('tbody', {}, lines.length === 0
      ? h('tr', {}, h('td', {colspan: 7}, 'No lines.'))
      : lines.map((l) => {
        const free = (l.item || '').startsWith('free-tier');
        const service = free ? 'Free tier' : (l.namespace ? `${l.namespace}/${l.service}` : l.service);
        return h('tr', {class: free ? 'credit' : null, 'data-line': [l.namespace, l.service, l.billingMode, l.item].join('|')},
          h('th', {scope: 'row', 'data-label': 'Service'}, service || '—'),
          h('td', {'data-label': 'Mode'}, l.billingMode || ''),
          h('td', {'data-label': 'Item'}, l.item || ''),
          h('td', {class: 'num', 'data-label': 'Quantity'}, l.quantity || '0'),
          h('td', {'data-label': 'Unit'}, l.unit || ''),
          h('td', {class: 'num', 'data-label': 'Unit price'}, l.unitPrice || ''),
          h('td', {class: 'money', 'data-label': 'Amount'}, l.amount || '0'));
      })),
    h('tfoot', {},
      foot('Subtotal', spec.subtotal),
      foot('Free tier credits', credit(spec.freeTier), 'credit'),
      foot('Total', spec.total, 'total'))));
}

function showCurrent(el, {invoice, name, key}, tenant) {
  if (!invoice) {
    replace(el, h('p', {class: 'notice', id: 'current-empty'},
      key ? `No usage yet in period ${key} for tenant ${tenant}: invoice ${name} does not exist yet.`
        : `No invoice of tenant ${tenant} covers the present time yet.`));
    return;
  }
  const spec = invoice.spec || {};
  const updated = invoice.status?.updatedAt ? ` · updated ${when(invoice.status.updatedAt)}` : '';
  replace(el,
    h('p', {class: 'invoice-total'},
      h('span', {}, 'Total so far '),
      h('strong', {id: 'current-total'}, `${spec.total || '0'} ${spec.currency || ''}`)),
    h('p', {class: 'notice'},
      `${invoice.metadata.name}: ${when(spec.periodStart)} to ${when(spec.periodEnd)}, ${phaseOf(invoice)}${updated}`,
      spec.priceList ? ` · priced with ${spec.priceList}` : ''),
    linesTable(invoice, 'current-lines'));
}

function showPast(el, invoices) {
  if (invoices.length === 0) {
    replace(el, h('p', {class: 'notice', id: 'past-empty'}, 'No earlier invoices.'));
    return;
  }
  // A redraw keeps open what the user opened.
  const open = new Set([...el.querySelectorAll('details[open]')].map((d) => d.dataset.name));
  replace(el, h('ul', {class: 'invoices'}, invoices.map((i) => {
    const spec = i.spec || {};
    const details = h('details', {'data-name': i.metadata.name},
      h('summary', {},
        h('span', {class: 'invoice-name'}, i.metadata.name),
        h('span', {}, ` period ${spec.period || '?'} `),
        h('span', {class: `badge ${phaseOf(i) === 'Final' ? 'ready' : 'pending'}`}, phaseOf(i)),
        h('span', {class: 'money'}, ` ${spec.total || '0'} ${spec.currency || ''}`)),
      linesTable(i, `lines-${i.metadata.name}`));
    details.open = open.has(i.metadata.name);
    return h('li', {}, details);
  })));
}

// ---------------------------------------------------------------- budgets

/** A decimal string as [digits as a BigInt, places]; null when it is not one. */
function decimal(text) {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec((text || '0').trim());
  if (!m) return null;
  const frac = m[3] || '';
  return [BigInt(`${m[1]}${m[2]}${frac}`), frac.length];
}

/** `spent` as a percentage of `amount` in tenths, exactly (as `stratus billing budgets`). */
export function tenthsOfPercent(spent, amount) {
  const s = decimal(spent);
  const a = decimal(amount);
  if (!s || !a || a[0] <= 0n) return null;
  const places = Math.max(s[1], a[1]);
  const scale = (d) => d[0] * 10n ** BigInt(places - d[1]);
  return Number((scale(s) * 1000n) / scale(a));
}

function showBudgets(el, budgets, cur) {
  if (budgets.length === 0) {
    replace(el, h('p', {class: 'notice', id: 'budgets-empty'}, 'No budgets. A tenant admin sets one with `stratus apply` (kind Budget).'));
    return;
  }
  replace(el, h('ul', {class: 'budgets'}, budgets.map((b) => {
    const spec = b.spec || {};
    const status = b.status || {};
    const spent = status.spent || '0';
    const tenths = tenthsOfPercent(spent, spec.amount);
    const crossed = new Set(status.crossed || []);
    const used = tenths === null ? '?' : `${Math.trunc(tenths / 10)}.${Math.abs(tenths % 10)}%`;
    const meter = h('meter', {id: `budget-meter-${b.metadata.name}`, min: 0, max: 100, low: 50, high: 90, optimum: 0,
      value: tenths === null ? 0 : Math.min(tenths / 10, 100), 'aria-label': `${used} of the budget spent`});
    return h('li', {class: 'budget', 'data-name': b.metadata.name},
      h('h3', {}, b.metadata.name),
      h('p', {class: 'budget-spent'},
        h('span', {}, `Spent ${spent} of ${spec.amount || '?'} ${cur}`.trim()),
        h('span', {class: 'used'}, ` (${used})`),
        status.period ? h('span', {class: 'notice'}, ` in period ${status.period}`) : null),
      meter,
      h('ul', {class: 'thresholds', 'aria-label': 'Thresholds'}, (spec.thresholds || []).map((t) => {
        const isCrossed = crossed.has(t);
        return h('li', {class: `badge ${isCrossed ? 'failed' : 'ready'}`, 'data-threshold': t, 'data-crossed': isCrossed ? 'true' : 'false'},
          `${t}% ${isCrossed ? 'crossed' : 'not reached'}`);
      })),
      spec.webhookUrl ? h('p', {class: 'notice'}, `Alerts are also sent to ${spec.webhookUrl}`,
        status.webhookPending?.length ? ` (${status.webhookPending.map((t) => `${t}%`).join(', ')} still to be delivered)` : '') : null);
  })));
}

// ---------------------------------------------------------------- the usage chart

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children) el.append(child instanceof Node ? child : String(child));
  return el;
}

/** Numbers for people: at most three decimals, no trailing zeros; thousands grouped. */
function amount(v) {
  return v.toLocaleString('en-US', {maximumFractionDigits: v < 10 ? 3 : 1});
}

/**
 * Draws `entries` in [from, to) as bars per hour, stacked per service (namespace/service, both
 * modes together), and the totals per service in a table beside it.
 */
function drawChart(chart, totalsEl, entries, metric, from, to) {
  const hours = Math.round((to - from) / HOUR);
  const perService = new Map();
  for (const e of entries) {
    const spec = e.spec || {};
    const start = Date.parse(spec.start);
    if (!(start >= from && start < to)) continue;
    const key = `${spec.namespace}/${spec.service}`;
    if (!perService.has(key)) perService.set(key, {hours: new Float64Array(hours), cpu: 0, memory: 0, requests: 0});
    const s = perService.get(key);
    s.hours[Math.floor((start - from) / HOUR)] += metric.of(spec);
    s.cpu += METRICS.cpu.of(spec);
    s.memory += METRICS.memory.of(spec);
    s.requests += METRICS.requests.of(spec);
  }
  const services = [...perService.keys()].sort();
  const stacked = new Float64Array(hours);
  for (const s of perService.values()) s.hours.forEach((v, i) => { stacked[i] += v; });
  const max = Math.max(0, ...stacked);

  const W = 1000;
  const H = 230;
  const left = 64;
  const bottom = 28;
  const top = 10;
  const plotW = W - left - 10;
  const plotH = H - top - bottom;
  const barW = plotW / hours;
  const y = (v) => top + plotH - (max > 0 ? (v / max) * plotH : 0);
  const title = `${metric.label} per hour and service, ${new Date(from).toISOString().slice(0, 13)}:00 to ${new Date(to).toISOString().slice(0, 13)}:00 UTC`;
  const root = svg('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'usage-chart-title', class: 'usage-chart', preserveAspectRatio: 'xMidYMid meet'},
    svg('title', {id: 'usage-chart-title'}, title));
  // Axes and grid: 0, half and the highest stack.
  for (const v of max > 0 ? [0, max / 2, max] : [0]) {
    root.append(svg('line', {x1: left, x2: W - 10, y1: y(v), y2: y(v), class: 'grid'}),
      svg('text', {x: left - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end'}, amount(v)));
  }
  const labelEvery = Math.max(1, Math.ceil(hours / 8));
  for (let i = 0; i < hours; i += labelEvery) {
    const at = new Date(from + i * HOUR);
    const text = hours <= 24 ? `${String(at.getUTCHours()).padStart(2, '0')}:00` : `${at.getUTCMonth() + 1}/${at.getUTCDate()} ${String(at.getUTCHours()).padStart(2, '0')}h`;
    root.append(svg('text', {x: left + i * barW, y: H - 8, class: 'axis'}, text));
  }
  const base = new Float64Array(hours);
  services.forEach((name, n) => {
    const s = perService.get(name);
    const series = svg('g', {class: `series series-${n % SERIES_COLOURS}`, 'data-service': name});
    s.hours.forEach((v, i) => {
      if (v <= 0) return;
      const y0 = y(base[i]);
      const y1 = y(base[i] + v);
      base[i] += v;
      series.append(svg('rect', {x: left + i * barW + barW * 0.1, y: y1, width: Math.max(barW * 0.8, 1), height: Math.max(y0 - y1, 0.5)},
        svg('title', {}, `${name}: ${amount(v)} ${metric.label} in the hour from ${new Date(from + i * HOUR).toISOString().slice(0, 16)}Z`)));
    });
    root.append(series);
  });
  root.append(svg('line', {x1: left, x2: left, y1: top, y2: top + plotH, class: 'axis-line'}));

  const legend = h('ul', {class: 'legend', 'aria-label': 'Services'}, services.map((name, n) =>
    h('li', {}, svgSwatch(n), name)));
  replace(chart, services.length === 0 ? h('p', {class: 'notice', id: 'usage-empty'}, 'No usage recorded in this time.') : null, root, legend);

  replace(totalsEl, services.length === 0 ? null : h('table', {id: 'usage-table'},
    h('caption', {}, 'Usage per service over the time shown (approximate; the invoice is exact)'),
    h('thead', {}, h('tr', {}, ['Service', 'vCPU-seconds', 'GiB-seconds', 'Requests'].map((c, i) => h('th', {scope: 'col', class: i ? 'num' : null}, c)))),
    h('tbody', {}, services.map((name) => {
      const s = perService.get(name);
      return h('tr', {'data-service': name},
        h('th', {scope: 'row', 'data-label': 'Service'}, name),
        h('td', {class: 'num', 'data-label': 'vCPU-seconds'}, amount(s.cpu)),
        h('td', {class: 'num', 'data-label': 'GiB-seconds'}, amount(s.memory)),
        h('td', {class: 'num', 'data-label': 'Requests'}, amount(s.requests)));
    }))));
}

function svgSwatch(n) {
  return svg('svg', {width: 12, height: 12, viewBox: '0 0 12 12', 'aria-hidden': 'true', class: `swatch series-${n % SERIES_COLOURS}`},
    svg('rect', {width: 12, height: 12, rx: 2}));
}

function when(timestamp) {
  if (!timestamp) return '?';
  const d = new Date(timestamp);
  return Number.isNaN(d.getTime()) ? timestamp : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}
