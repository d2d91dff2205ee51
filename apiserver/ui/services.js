// The services page: every Service of the chosen namespace with its readiness, URL, latest
// revision, traffic and instances (ready / desired, summed over its revisions), kept current by
// the API's watch streams (no reload), and its requests per second, read every few seconds
// from what the gateways measured (GET …/services/NAME/metrics).

import * as api from './api.js';
import {h, replace} from './dom.js';

const COLUMNS = ['Name', 'Ready', 'URL', 'Latest revision', 'Traffic', 'Instances', 'Requests/s'];
/** How often the request rates are read (the API server keeps them in 5 s slots). */
const RATES_EVERY = 5000;
/** Past this many Services the page reads no rates (one request each per round). */
const RATES_AT_MOST = 50;
const SERVICE_LABEL = 'stratus.dev/service';

/** Renders the page into `main` for `namespace`; returns a function that stops the watch. */
export function render(main, {namespace}) {
  if (!namespace) {
    replace(main, h('h1', {}, 'Services'),
      h('p', {class: 'notice'}, 'You may not list Services in any namespace. Ask an admin of your tenant for a role in one.'));
    return () => {};
  }
  const state = h('p', {id: 'live-state', class: 'live-state', role: 'status', 'aria-live': 'polite'}, 'Connecting…');
  const body = h('tbody', {id: 'services-rows'});
  const table = h('table', {id: 'services', class: 'services', 'aria-describedby': 'live-state'},
    h('caption', {}, `Services in namespace ${namespace}`),
    h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', {scope: 'col'}, c)))),
    body);
  const empty = h('p', {id: 'services-empty', class: 'notice'}, `No Services in ${namespace} yet.`);
  empty.hidden = true;
  const deploy = h('a', {href: `#/deploy/${encodeURIComponent(namespace)}`, id: 'deploy-service', class: 'button'}, 'Deploy a service');
  replace(main, h('div', {class: 'page-head'}, h('h1', {}, 'Services'), state, deploy), h('div', {class: 'table-wrap'}, table), empty);

  const stop = new AbortController();
  const page = {services: [], revisions: new Map(), rates: new Map()};
  const show = () => {
    replace(body, page.services.map((svc) => row(svc, page)));
    table.hidden = page.services.length === 0;
    empty.hidden = page.services.length !== 0;
  };
  api.follow(api.collection('services', namespace), {
    signal: stop.signal,
    onChange(objects) {
      page.services = [...objects.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
      show();
    },
    onState(s, error) {
      state.textContent = s === 'live' ? 'Live: changes appear as they happen.' : `Reconnecting… (${error?.message || 'the stream ended'})`;
      state.className = `live-state ${s}`;
    },
  });
  api.follow(api.collection('revisions', namespace), {
    signal: stop.signal,
    onChange(objects) {
      page.revisions = objects;
      show();
    },
    // The Services' stream says how the page is connected.
    onState() {},
  });
  readRates(namespace, page, show, stop.signal);
  return () => stop.abort();
}

/** Reads each Service's latest request rate every RATES_EVERY until `signal` aborts. */
async function readRates(namespace, page, show, signal) {
  while (!signal.aborted) {
    const names = page.services.slice(0, RATES_AT_MOST).map((s) => s.metadata.name);
    await Promise.all(names.map(async (name) => {
      const path = `${api.collection('services', namespace)}/${encodeURIComponent(name)}/metrics`;
      try {
        page.rates.set(name, latestRate(await api.request('GET', path, undefined, {signal})));
      } catch {
        // Not measured (no gateway reported yet, or the server keeps no metrics): shown as —.
        page.rates.delete(name);
      }
    }));
    if (signal.aborted) return;
    show();
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, RATES_EVERY);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      }, {once: true});
    });
  }
}

/** The rate of the last whole slot of a metrics answer (the slot in progress is partial). */
function latestRate(metrics) {
  const points = metrics?.points || [];
  const step = metrics?.stepSeconds || 5;
  const now = Date.now() / 1000;
  const whole = points.filter((p) => typeof p.requestsPerSecond === 'number' && p.time + step <= now);
  return whole.length ? whole[whole.length - 1].requestsPerSecond : null;
}

function row(service, page) {
  const status = service.status || {};
  const name = service.metadata.name;
  let ready = 0;
  let desired = 0;
  for (const r of page.revisions.values()) {
    if (r.metadata.labels?.[SERVICE_LABEL] !== name) continue;
    ready += r.status?.readyInstances || 0;
    desired += r.status?.desiredInstances || 0;
  }
  const rate = page.rates.get(name);
  return h('tr', {'data-name': name},
    h('th', {scope: 'row', 'data-label': 'Name'},
      h('a', {href: `#/services/${encodeURIComponent(service.metadata.namespace)}/${encodeURIComponent(name)}`}, name)),
    h('td', {'data-label': 'Ready'}, readiness(status)),
    h('td', {'data-label': 'URL'}, link(status.url)),
    h('td', {'data-label': 'Latest revision'}, status.latestReadyRevisionName || status.latestCreatedRevisionName || '—'),
    h('td', {'data-label': 'Traffic'}, traffic(status.traffic?.length ? status.traffic : service.spec?.traffic, status)),
    h('td', {'data-label': 'Instances', class: 'instances'}, `${ready} / ${desired}`),
    h('td', {'data-label': 'Requests/s', class: 'rate'}, rate == null ? '—' : rate.toFixed(rate < 10 ? 1 : 0)));
}

/** The Ready condition as a word and, when not ready, why. */
function readiness(status) {
  const ready = (status.conditions || []).find((c) => c.type === 'Ready');
  if (!ready || ready.status === 'Unknown') {
    return h('span', {class: 'badge pending', title: ready?.message || 'not reconciled yet'}, 'Pending');
  }
  if (ready.status === 'True') return h('span', {class: 'badge ready'}, 'Ready');
  const why = [ready.reason, ready.message].filter(Boolean).join(': ');
  return [h('span', {class: 'badge failed'}, 'Not ready'), why ? h('span', {class: 'why'}, why) : null];
}

/** A link for an http(s) URL only: a URL of another scheme (javascript:) is shown as text. */
function link(url) {
  if (!url) return '—';
  try {
    const parsed = new URL(url);
    if (parsed.protocol === 'http:' || parsed.protocol === 'https:') {
      return h('a', {href: parsed.href, rel: 'noopener noreferrer', target: '_blank'}, url);
    }
  } catch {
    // Not a URL: shown as it is.
  }
  return url;
}

/** "80% rev-2, 20% rev-1 (tag canary)"; "100% latest" when the Service says nothing. */
function traffic(targets, status) {
  if (!targets || targets.length === 0) return '100% latest';
  return h('ul', {class: 'traffic'}, targets.map((t) => {
    const revision = t.revisionName || (t.latestRevision !== false ? `latest${status.latestReadyRevisionName ? ` (${status.latestReadyRevisionName})` : ''}` : '?');
    return h('li', {}, `${t.percent ?? 0}% ${revision}`, t.tag ? h('span', {class: 'tag'}, t.tag) : null);
  }));
}
