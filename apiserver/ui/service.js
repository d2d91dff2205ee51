// A service's page: its revisions, the traffic editor (percent and tag per revision, rollback),
// its instances, events, live logs and live charts of requests per second, latency and
// instances. The Service, its Revisions, Instances and Events are followed through the API's
// watch streams; the charts read GET …/services/NAME/metrics (what the gateways measured,
// kept by the API server for 15 minutes) every few seconds.

import * as api from './api.js';
import {h, replace} from './dom.js';

const SERVICE_LABEL = 'stratus.dev/service';
/** How often the traffic metrics are read (the API server's slots are 5 s long). */
const METRICS_EVERY = 5000;
/** The charts' span: the last ten minutes. */
const SPAN_SECONDS = 600;
/** Log lines kept on screen. */
const MAX_LOG_LINES = 1000;
/** A DNS label (RFC 1123), as the API requires of a traffic tag. */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** The draft row of "the latest revision, whichever it is". */
const LATEST = '@latest';
const SVG = 'http://www.w3.org/2000/svg';

/** Renders the page of Service `name` in `namespace`; returns a function that stops it. */
export function render(main, {namespace, name}) {
  const stop = new AbortController();
  const signal = stop.signal;
  const page = new ServicePage(main, namespace, name, signal);
  page.start();
  return () => {
    stop.abort();
    page.stopLogs();
  };
}

class ServicePage {
  constructor(main, namespace, name, signal) {
    this.namespace = namespace;
    this.name = name;
    this.signal = signal;
    this.service = null;
    this.gone = false;
    this.revisions = [];
    this.instances = [];
    this.events = [];
    /** The traffic being edited: key (revision name or LATEST) → {percent, tag}; null = as saved. */
    this.draft = null;
    /** Instances over time, sampled from the watch: [{time (s), count}]. */
    this.instanceSeries = [];
    this.metrics = null;
    this.logStop = null;

    this.state = h('p', {id: 'live-state', class: 'live-state', role: 'status', 'aria-live': 'polite'}, 'Connecting…');
    this.summary = h('dl', {id: 'service-summary', class: 'summary'});
    this.revisionRows = h('tbody', {id: 'revision-rows'});
    this.trafficForm = h('form', {id: 'traffic-form', class: 'traffic-editor', novalidate: true, 'aria-labelledby': 'traffic-title'});
    this.instanceRows = h('tbody', {id: 'instance-rows'});
    this.eventRows = h('tbody', {id: 'event-rows'});
    this.charts = h('div', {id: 'charts', class: 'charts'});
    this.logInstance = h('select', {id: 'log-instance'});
    this.logButton = h('button', {type: 'button', id: 'log-follow', 'aria-pressed': 'false', onclick: () => this.toggleLogs()}, 'Follow logs');
    this.logState = h('p', {id: 'log-state', class: 'notice', role: 'status'}, 'Not following.');
    this.logLines = h('pre', {id: 'log-lines', class: 'log-lines', role: 'log', 'aria-label': 'Log lines', tabindex: '0'});
    this.logInstance.addEventListener('change', () => {
      if (this.logStop) this.followLogs();
    });

    const list = `#/services/${encodeURIComponent(namespace)}`;
    replace(main,
      h('nav', {class: 'crumbs', 'aria-label': 'Breadcrumb'}, h('a', {href: list, id: 'back-to-services'}, `Services in ${namespace}`), ' / ', name),
      h('div', {class: 'page-head'}, h('h1', {id: 'service-title'}, name), this.state),
      this.summary,
      section('charts-title', 'Traffic and instances', this.charts,
        h('p', {class: 'notice'}, 'Requests per second and latency as the gateways measured them (5-second slots); instances as the watch reports them.')),
      section('revisions-title', 'Revisions', h('div', {class: 'table-wrap'}, h('table', {id: 'revisions', class: 'records'},
        h('caption', {}, 'Newest first'),
        h('thead', {}, h('tr', {}, ['Revision', 'Ready', 'Instances', 'Created'].map((c) => h('th', {scope: 'col'}, c)))),
        this.revisionRows))),
      section('traffic-title', 'Traffic', this.trafficForm),
      section('instances-title', 'Instances', h('div', {class: 'table-wrap'}, h('table', {id: 'instances', class: 'records'},
        h('thead', {}, h('tr', {}, ['Instance', 'Revision', 'Node', 'Address', 'Phase', 'Restarts', 'Started'].map((c) => h('th', {scope: 'col'}, c)))),
        this.instanceRows))),
      section('logs-title', 'Logs', h('div', {class: 'log-controls'},
        h('label', {for: 'log-instance'}, 'Instance'), this.logInstance, this.logButton,
        h('button', {type: 'button', id: 'log-clear', onclick: () => this.logLines.replaceChildren()}, 'Clear')),
      this.logState, this.logLines),
      section('events-title', 'Events', h('div', {class: 'table-wrap'}, h('table', {id: 'events', class: 'records'},
        h('thead', {}, h('tr', {}, ['Last seen', 'Type', 'Reason', 'Object', 'Message'].map((c) => h('th', {scope: 'col'}, c)))),
        this.eventRows))));
    this.showLogChoices();
  }

  start() {
    const onState = (s, error) => {
      this.state.textContent = s === 'live' ? 'Live: changes appear as they happen.' : `Reconnecting… (${error?.message || 'the stream ended'})`;
      this.state.className = `live-state ${s}`;
    };
    const quiet = () => {};
    api.follow(api.collection('services', this.namespace), {
      signal: this.signal,
      onState,
      onChange: (objects) => {
        this.service = objects.get(this.name) || null;
        this.gone = !this.service;
        this.showSummary();
        this.showRevisions();
        this.showTraffic();
      },
    });
    api.follow(api.collection('revisions', this.namespace), {
      signal: this.signal,
      onState: quiet,
      onChange: (objects) => {
        this.revisions = [...objects.values()]
          .filter((r) => r.metadata.labels?.[SERVICE_LABEL] === this.name)
          .sort((a, b) => created(b) - created(a) || b.metadata.name.localeCompare(a.metadata.name));
        this.showRevisions();
        this.showTraffic();
      },
    });
    api.follow(api.collection('instances', this.namespace), {
      signal: this.signal,
      onState: quiet,
      onChange: (objects) => {
        this.instances = [...objects.values()]
          .filter((i) => i.metadata.labels?.[SERVICE_LABEL] === this.name || i.spec?.serviceName === this.name)
          .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
        this.sampleInstances();
        this.showInstances();
        this.showLogChoices();
        this.showRevisions();
        this.showEvents();
      },
    });
    api.follow(api.collection('events', this.namespace), {
      signal: this.signal,
      onState: quiet,
      onChange: (objects) => {
        this.events = [...objects.values()];
        this.showEvents();
      },
    });
    this.pollMetrics();
  }

  // ---------------------------------------------------------------- summary and revisions

  showSummary() {
    if (this.gone) {
      replace(this.summary, h('div', {}, h('dt', {}, 'Status'), h('dd', {id: 'service-gone'}, `Service ${this.name} does not exist (any more).`)));
      return;
    }
    const status = this.service.status || {};
    const ready = condition(status, 'Ready');
    replace(this.summary,
      item('Ready', badge(ready)),
      item('URL', link(status.url)),
      item('Latest revision', status.latestReadyRevisionName || status.latestCreatedRevisionName || '—'),
      item('Image', this.service.spec?.template?.spec?.containers?.[0]?.image || '—'));
  }

  showRevisions() {
    const traffic = new Map();
    for (const t of this.service?.status?.traffic || []) {
      if (t.revisionName) traffic.set(t.revisionName, (traffic.get(t.revisionName) || 0) + (t.percent || 0));
    }
    replace(this.revisionRows, this.revisions.map((r) => {
      const st = r.status || {};
      const running = this.instances.filter((i) => i.spec?.revisionName === r.metadata.name && i.status?.phase === 'Running').length;
      const share = traffic.get(r.metadata.name);
      return h('tr', {'data-name': r.metadata.name},
        h('th', {scope: 'row', 'data-label': 'Revision'}, r.metadata.name, share ? h('span', {class: 'tag'}, `${share}%`) : null),
        h('td', {'data-label': 'Ready'}, badge(condition(st, 'Ready'))),
        h('td', {'data-label': 'Instances'}, `${st.readyInstances ?? running} ready / ${st.desiredInstances ?? 0} desired`,
          st.scaleReason ? h('span', {class: 'why'}, st.scaleReason) : null),
        h('td', {'data-label': 'Created'}, when(r.metadata.creationTimestamp)));
    }));
    if (this.revisions.length === 0) replace(this.revisionRows, h('tr', {}, h('td', {colspan: '4'}, 'No revisions yet.')));
  }

  // ---------------------------------------------------------------- the traffic editor

  /** The traffic as saved: key → {percent, tag}, with a row for every revision and for LATEST. */
  savedTraffic() {
    const rows = new Map([[LATEST, {percent: 0, tag: ''}]]);
    for (const r of this.revisions) rows.set(r.metadata.name, {percent: 0, tag: ''});
    const targets = this.service?.spec?.traffic || [];
    if (targets.length === 0) rows.set(LATEST, {percent: 100, tag: ''});
    for (const t of targets) {
      const key = t.revisionName || LATEST;
      const row = rows.get(key) || {percent: 0, tag: ''};
      rows.set(key, {percent: row.percent + (t.percent || 0), tag: t.tag || row.tag});
    }
    return rows;
  }

  showTraffic() {
    if (!this.service) {
      replace(this.trafficForm);
      this.trafficShown = null;
      return;
    }
    // While the user edits, the watch adds rows for new revisions but leaves their values alone.
    const saved = this.savedTraffic();
    const rows = this.draft || saved;
    for (const [key, value] of saved) if (!rows.has(key)) rows.set(key, {percent: 0, tag: value.tag});
    const latest = this.service.status?.latestReadyRevisionName || this.service.status?.latestCreatedRevisionName;
    // Fields are not replaced (under the user's hands) while nothing new is to be shown: while
    // editing, only a new revision is new; else any change of what the form shows.
    const keys = [...rows.keys()].join(' ');
    const shown = JSON.stringify([[...rows.entries()], latest, this.trafficNote || '']);
    if (this.draft ? keys === this.trafficKeys : shown === this.trafficShown) return;
    this.trafficKeys = keys;
    this.trafficShown = shown;
    const body = h('tbody', {id: 'traffic-rows'}, [...rows.entries()].map(([key, value], index) => {
      const id = `traffic-${index}`;
      const label = key === LATEST ? `Latest revision${latest ? ` (now ${latest})` : ''}` : key;
      const percent = h('input', {
        id: `${id}-percent`, name: 'percent', type: 'number', min: '0', max: '100', step: '1', inputmode: 'numeric',
        value: String(value.percent), 'aria-describedby': `${id}-error`, 'data-key': key,
        oninput: (e) => this.edit(key, {percent: e.target.value}),
      });
      const tag = h('input', {
        id: `${id}-tag`, name: 'tag', type: 'text', value: value.tag, autocomplete: 'off', spellcheck: 'false',
        'aria-describedby': `${id}-error`, 'data-key': key, oninput: (e) => this.edit(key, {tag: e.target.value}),
      });
      const rollback = key === LATEST ? null : h('button', {
        type: 'button', class: 'rollback', 'data-key': key, 'aria-label': `Send all traffic to ${key}`,
        onclick: () => this.rollback(key),
      }, 'Send 100% here');
      return h('tr', {'data-key': key},
        h('th', {scope: 'row', 'data-label': 'Target'}, label),
        h('td', {'data-label': 'Percent'}, h('label', {class: 'visually-hidden', for: percent.id}, `Percent of traffic to ${label}`), percent),
        h('td', {'data-label': 'Tag'}, h('label', {class: 'visually-hidden', for: tag.id}, `Tag of ${label}`), tag),
        h('td', {'data-label': 'Rollback'}, rollback),
        h('td', {'data-label': 'Error', id: `${id}-error`, class: 'field-error', 'aria-live': 'polite'}));
    }));
    const focused = document.activeElement;
    const focusId = this.trafficForm.contains(focused) ? focused.id : '';
    const total = [...rows.values()].reduce((sum, r) => sum + (Number(r.percent) || 0), 0);
    replace(this.trafficForm,
      h('div', {class: 'table-wrap'}, h('table', {class: 'records'},
        h('thead', {}, h('tr', {}, ['Target', 'Percent', 'Tag', 'Rollback', ''].map((c) => h('th', {scope: 'col'}, c)))),
        body)),
      h('p', {id: 'traffic-total', class: total === 100 ? 'notice' : 'message'}, `Total: ${total}%`),
      h('p', {id: 'traffic-message', class: 'notice', role: 'status', 'aria-live': 'polite'}, this.trafficNote || ''),
      h('div', {class: 'actions'},
        h('button', {type: 'submit', id: 'traffic-save'}, 'Save traffic'),
        h('button', {type: 'button', id: 'traffic-reset', onclick: () => this.resetTraffic()}, 'Reset')));
    this.trafficForm.onsubmit = (e) => {
      e.preventDefault();
      this.saveTraffic();
    };
    if (focusId) document.getElementById(focusId)?.focus();
  }

  edit(key, change) {
    if (!this.draft) this.draft = this.savedTraffic();
    const row = this.draft.get(key) || {percent: 0, tag: ''};
    this.draft.set(key, {...row, ...change});
    const total = [...this.draft.values()].reduce((sum, r) => sum + (Number(r.percent) || 0), 0);
    const totalLine = document.getElementById('traffic-total');
    if (totalLine) {
      totalLine.textContent = `Total: ${total}%`;
      totalLine.className = total === 100 ? 'notice' : 'message';
    }
  }

  resetTraffic() {
    this.draft = null;
    this.trafficNote = '';
    this.trafficShown = null;
    this.showTraffic();
  }

  rollback(revision) {
    this.draft = this.savedTraffic();
    for (const [key, row] of this.draft) this.draft.set(key, {...row, percent: key === revision ? 100 : 0});
    this.saveTraffic(`All traffic now goes to ${revision}.`);
  }

  /** Checks the draft; marks each field at fault. Returns the targets to send, or null. */
  validate(rows) {
    const errors = new Map();
    const tags = new Map();
    let total = 0;
    for (const [key, row] of rows) {
      const text = String(row.percent).trim();
      const percent = Number(text);
      if (text === '' || !Number.isInteger(percent) || percent < 0 || percent > 100) {
        errors.set(key, 'Percent must be a whole number from 0 to 100.');
      } else {
        total += percent;
      }
      const tag = row.tag.trim();
      if (tag && !DNS_LABEL.test(tag)) {
        errors.set(key, `Tag "${tag}" is not a DNS label: lowercase letters, digits and "-", starting and ending with a letter or digit, at most 63.`);
      } else if (tag && tags.has(tag)) {
        errors.set(key, `Tag "${tag}" is used twice.`);
      }
      if (tag) tags.set(tag, key);
    }
    this.showFieldErrors(errors);
    if (errors.size) return {error: 'Fix the fields marked.'};
    if (total !== 100) return {error: `The percentages add up to ${total}, not 100.`};
    const targets = [];
    for (const [key, row] of rows) {
      const percent = Number(row.percent);
      const tag = row.tag.trim();
      if (percent === 0 && !tag) continue;
      const target = key === LATEST ? {latestRevision: true, percent} : {revisionName: key, percent};
      if (tag) target.tag = tag;
      targets.push(target);
    }
    return {targets};
  }

  showFieldErrors(errors) {
    for (const row of this.trafficForm.querySelectorAll('#traffic-rows tr')) {
      const message = errors.get(row.dataset.key) || '';
      const cell = row.querySelector('.field-error');
      if (cell) cell.textContent = message;
      for (const input of row.querySelectorAll('input')) input.setAttribute('aria-invalid', message ? 'true' : 'false');
    }
  }

  async saveTraffic(done = 'Traffic saved.') {
    const rows = this.draft || this.savedTraffic();
    const checked = this.validate(rows);
    const message = document.getElementById('traffic-message');
    if (checked.error) {
      message.textContent = checked.error;
      message.className = 'message error';
      return;
    }
    const order = [...rows.keys()];
    const save = document.getElementById('traffic-save');
    save.disabled = true;
    message.textContent = 'Saving…';
    message.className = 'notice';
    try {
      // A merge patch of spec.traffic alone: it changes nothing else of the Service (a template
      // deployed meanwhile from the CLI stays), and it may be sent again when the network breaks
      // under it (Chromium fails every request in flight when Docker adds an interface): the
      // same patch twice is the same Service.
      const path = `${api.collection('services', this.namespace)}/${encodeURIComponent(this.name)}`;
      const patch = {spec: {traffic: checked.targets}};
      const saved = await api.request('PATCH', path, patch, {signal: this.signal, contentType: 'application/merge-patch+json'});
      // The watch may have brought a newer version already (the controller's status for this
      // very change): the answer must not put an older one back over it.
      if (newer(saved, this.service)) this.service = saved;
      this.draft = null;
      this.trafficNote = done;
      this.trafficShown = null;
      this.showTraffic();
    } catch (error) {
      if (this.signal.aborted) return;
      save.disabled = false;
      // The API names fields as spec.traffic[i].percent: the i-th target sent.
      const errors = new Map();
      const sent = checked.targets.map((t) => t.revisionName || LATEST);
      for (const cause of error.causes || []) {
        const at = /^spec\.traffic\[(\d+)\]/.exec(cause.field || '');
        const key = at ? sent[Number(at[1])] : null;
        if (key && order.includes(key)) errors.set(key, cause.message || error.message);
      }
      this.showFieldErrors(errors);
      message.textContent = `Not saved: ${error.message}`;
      message.className = 'message error';
    }
  }

  // ---------------------------------------------------------------- instances and events

  showInstances() {
    replace(this.instanceRows, this.instances.map((i) => {
      const st = i.status || {};
      const phase = st.phase || 'Pending';
      return h('tr', {'data-name': i.metadata.name},
        h('th', {scope: 'row', 'data-label': 'Instance'}, i.metadata.name),
        h('td', {'data-label': 'Revision'}, i.spec?.revisionName || '—'),
        h('td', {'data-label': 'Node'}, i.spec?.nodeName || 'not scheduled'),
        h('td', {'data-label': 'Address'}, st.address || '—'),
        h('td', {'data-label': 'Phase'}, h('span', {class: `badge ${phase === 'Running' && st.ready ? 'ready' : phase === 'Failed' ? 'failed' : 'pending'}`}, st.ready ? `${phase}, ready` : phase),
          st.reason ? h('span', {class: 'why'}, [st.reason, st.message].filter(Boolean).join(': ')) : null),
        h('td', {'data-label': 'Restarts'}, String(st.restartCount || 0)),
        h('td', {'data-label': 'Started'}, when(st.startedAt)));
    }));
    if (this.instances.length === 0) replace(this.instanceRows, h('tr', {}, h('td', {colspan: '7'}, 'No instances: the service is scaled to zero.')));
  }

  showEvents() {
    const revisions = new Set(this.revisions.map((r) => r.metadata.name));
    const instances = new Set(this.instances.map((i) => i.metadata.name));
    const mine = this.events.filter((e) => {
      const o = e.spec?.involvedObject || {};
      return (o.kind === 'Service' && o.name === this.name) || (o.kind === 'Revision' && revisions.has(o.name))
        || (o.kind === 'Instance' && instances.has(o.name));
    }).sort((a, b) => seen(b) - seen(a)).slice(0, 50);
    replace(this.eventRows, mine.map((e) => {
      const s = e.spec || {};
      return h('tr', {},
        h('td', {'data-label': 'Last seen'}, when(s.lastTimestamp || s.firstTimestamp || e.metadata.creationTimestamp), s.count > 1 ? ` (×${s.count})` : ''),
        h('td', {'data-label': 'Type'}, h('span', {class: `badge ${s.type === 'Warning' ? 'failed' : 'ready'}`}, s.type || 'Normal')),
        h('td', {'data-label': 'Reason'}, s.reason || ''),
        h('td', {'data-label': 'Object'}, `${s.involvedObject?.kind || ''}/${s.involvedObject?.name || ''}`),
        h('td', {'data-label': 'Message'}, s.message || ''));
    }));
    if (mine.length === 0) replace(this.eventRows, h('tr', {}, h('td', {colspan: '5'}, 'No events.')));
  }

  // ---------------------------------------------------------------- logs

  showLogChoices() {
    const chosen = this.logInstance.value;
    replace(this.logInstance,
      h('option', {value: ''}, 'All instances'),
      this.instances.map((i) => h('option', {value: i.metadata.name}, i.metadata.name)));
    if ([...this.logInstance.options].some((o) => o.value === chosen)) this.logInstance.value = chosen;
  }

  toggleLogs() {
    if (this.logStop) this.stopLogs();
    else this.followLogs();
  }

  stopLogs() {
    this.logStop?.abort();
    this.logStop = null;
    this.logButton.textContent = 'Follow logs';
    this.logButton.setAttribute('aria-pressed', 'false');
    this.logState.textContent = 'Not following.';
  }

  /** Follows the chosen instance's logs (or every instance's, each line prefixed [instance]). */
  followLogs() {
    this.logStop?.abort();
    const stop = new AbortController();
    this.logStop = stop;
    this.signal.addEventListener('abort', () => stop.abort(), {once: true});
    const instance = this.logInstance.value;
    const path = instance
      ? `${api.collection('instances', this.namespace)}/${encodeURIComponent(instance)}/log`
      : `${api.collection('services', this.namespace)}/${encodeURIComponent(this.name)}/log`;
    this.logButton.textContent = 'Stop following';
    this.logButton.setAttribute('aria-pressed', 'true');
    this.logState.textContent = `Following ${instance || 'every instance'}…`;
    api.followLines(path, {
      signal: stop.signal,
      // Picked up again after the network broke it: only lines written from then on (those
      // written while it was down are not shown, and a line says so).
      query: (first) => `?follow=true&tailLines=${first ? 100 : 0}`,
      onState: (state, error) => {
        if (this.logStop !== stop) return;
        if (state === 'live') {
          this.logState.textContent = `Following ${instance || 'every instance'}…`;
        } else if (!this.logState.textContent.startsWith('The connection broke')) {
          this.logState.textContent = `The connection broke (${error.message}); reconnecting…`;
          this.logLines.append(h('span', {class: 'log-line log-gap'}, '— the connection broke here: lines written until it is back are not shown —'), '\n');
        }
      },
      onLine: (line) => {
        this.logLines.append(h('span', {class: 'log-line'}, line), '\n');
        while (this.logLines.childNodes.length > MAX_LOG_LINES * 2) {
          this.logLines.firstChild.remove();
          this.logLines.firstChild.remove();
        }
        this.logLines.scrollTop = this.logLines.scrollHeight;
      },
    }).then(() => {
      if (this.logStop === stop) {
        this.logStop = null;
        this.logButton.textContent = 'Follow logs';
        this.logButton.setAttribute('aria-pressed', 'false');
        this.logState.textContent = `The log of ${instance || 'the service'} ended.`;
      }
    }, (error) => {
      if (this.logStop !== stop || stop.signal.aborted) return;
      this.logStop = null;
      this.logButton.textContent = 'Follow logs';
      this.logButton.setAttribute('aria-pressed', 'false');
      this.logState.textContent = `The log stream broke (${error.message}): ${instance ? 'the instance may have stopped' : 'follow again'}.`;
    });
  }

  // ---------------------------------------------------------------- charts

  sampleInstances() {
    const now = Date.now() / 1000;
    const count = this.instances.filter((i) => i.status?.phase === 'Running').length;
    this.instanceSeries.push({time: now, count});
    this.instanceSeries = this.instanceSeries.filter((p) => p.time >= now - SPAN_SECONDS);
  }

  async pollMetrics() {
    const path = `${api.collection('services', this.namespace)}/${encodeURIComponent(this.name)}/metrics`;
    while (!this.signal.aborted) {
      try {
        this.metrics = await api.request('GET', path, undefined, {signal: this.signal});
        this.metricsError = '';
      } catch (error) {
        if (this.signal.aborted) return;
        this.metricsError = error.message;
      }
      // The instance count holds between changes: sample it so the line reaches now.
      this.sampleInstances();
      this.showCharts();
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, METRICS_EVERY);
        this.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve();
        }, {once: true});
      });
    }
  }

  showCharts() {
    const now = Date.now() / 1000;
    const points = (this.metrics?.points || []).filter((p) => p.time >= now - SPAN_SECONDS);
    const rps = points.map((p) => ({time: p.time, value: p.requestsPerSecond}));
    const p50 = points.filter((p) => p.p50Ms !== null && p.p50Ms !== undefined).map((p) => ({time: p.time, value: p.p50Ms}));
    const p99 = points.filter((p) => p.p99Ms !== null && p.p99Ms !== undefined).map((p) => ({time: p.time, value: p.p99Ms}));
    const instances = this.instanceSeries.map((p) => ({time: p.time, value: p.count}));
    const last = (series) => (series.length ? series[series.length - 1].value : null);
    const fixed = (v, digits = 1) => (v === null ? '—' : v.toFixed(digits));
    replace(this.charts,
      chart({id: 'chart-rps', title: 'Requests per second', now, unit: 'req/s',
        lines: [{name: 'requests/s', cls: 'line-a', points: rps}],
        reading: h('span', {id: 'rps-now', 'data-time': rps.length ? rps[rps.length - 1].time : ''}, fixed(last(rps)))}),
      chart({id: 'chart-latency', title: 'Latency (ms)', now, unit: 'ms',
        lines: [{name: 'p50', cls: 'line-a', points: p50}, {name: 'p99', cls: 'line-b', points: p99}],
        reading: [h('span', {id: 'p50-now'}, `p50 ${fixed(last(p50))}`), ' · ', h('span', {id: 'p99-now'}, `p99 ${fixed(last(p99))}`)]}),
      chart({id: 'chart-instances', title: 'Instances running', now, unit: '', step: true,
        lines: [{name: 'instances', cls: 'line-a', points: instances}],
        reading: h('span', {id: 'instances-now'}, String(last(instances) ?? 0))}),
      this.metricsError ? h('p', {class: 'message error', id: 'metrics-error'}, `Traffic metrics unavailable: ${this.metricsError}`) : null);
  }
}

// ---------------------------------------------------------------- helpers

function section(titleId, title, ...children) {
  return h('section', {class: 'panel', 'aria-labelledby': titleId}, h('h2', {id: titleId}, title), children);
}

function item(term, value) {
  return h('div', {}, h('dt', {}, term), h('dd', {}, value));
}

function condition(status, type) {
  return (status?.conditions || []).find((c) => c.type === type);
}

/** A condition as a word and, when not True, its reason. */
function badge(c) {
  if (!c || c.status === 'Unknown') {
    return [h('span', {class: 'badge pending'}, 'Pending'), c?.reason ? h('span', {class: 'why'}, [c.reason, c.message].filter(Boolean).join(': ')) : null];
  }
  if (c.status === 'True') return h('span', {class: 'badge ready'}, 'Ready');
  return [h('span', {class: 'badge failed'}, 'Not ready'), h('span', {class: 'why'}, [c.reason, c.message].filter(Boolean).join(': '))];
}

function link(url) {
  if (!url) return '—';
  try {
    const parsed = new URL(url);
    if (parsed.protocol === 'http:' || parsed.protocol === 'https:') {
      return h('a', {href: parsed.href, rel: 'noopener noreferrer', target: '_blank', id: 'service-url'}, url);
    }
  } catch {
    // Not a URL: shown as text.
  }
  return url;
}

function created(o) {
  return Date.parse(o.metadata.creationTimestamp || '') || 0;
}

function seen(e) {
  return Date.parse(e.spec?.lastTimestamp || e.spec?.firstTimestamp || e.metadata.creationTimestamp || '') || 0;
}

/** A time as "12:03:04 (5 min ago)", with the full time in a <time> element. */
function when(timestamp) {
  const t = Date.parse(timestamp || '');
  if (!t) return '—';
  const ago = Math.max(0, Math.round((Date.now() - t) / 1000));
  const text = ago < 60 ? `${ago} s ago` : ago < 3600 ? `${Math.round(ago / 60)} min ago` : ago < 86400 ? `${Math.round(ago / 3600)} h ago` : `${Math.round(ago / 86400)} d ago`;
  return h('time', {datetime: new Date(t).toISOString(), title: new Date(t).toLocaleString()}, text);
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children.flat()) if (child) el.append(child);
  return el;
}

/**
 * A line chart of the last SPAN_SECONDS up to `now`: time across, value up from zero to a
 * rounded maximum; `step` draws each value until the next. Its text reading (the latest
 * values) and its accessible name say what the lines show.
 */
function chart({id, title, now, unit, lines, reading, step = false}) {
  const width = 600;
  const height = 160;
  const pad = {left: 44, right: 8, top: 8, bottom: 22};
  const start = now - SPAN_SECONDS;
  const all = lines.flatMap((l) => l.points.map((p) => p.value));
  const top = niceMax(Math.max(0, ...all));
  const x = (time) => pad.left + ((time - start) / SPAN_SECONDS) * (width - pad.left - pad.right);
  const y = (value) => height - pad.bottom - (value / top) * (height - pad.top - pad.bottom);
  const grid = [0, 0.5, 1].map((f) => [
    svg('line', {class: 'grid', x1: pad.left, x2: width - pad.right, y1: y(top * f), y2: y(top * f)}),
    svg('text', {class: 'axis', x: pad.left - 4, y: y(top * f) + 4, 'text-anchor': 'end'}, formatValue(top * f)),
  ]);
  const ticks = [0, 5, 10].map((m) => svg('text', {class: 'axis', x: x(now - (10 - m) * 60), y: height - 6, 'text-anchor': m === 0 ? 'start' : m === 10 ? 'end' : 'middle'},
    m === 10 ? 'now' : `-${10 - m} min`));
  const paths = lines.map((l) => {
    const pts = l.points.filter((p) => p.time >= start);
    if (pts.length === 0) return null;
    let d = '';
    pts.forEach((p, i) => {
      if (i === 0) d += `M${x(p.time).toFixed(1)},${y(p.value).toFixed(1)}`;
      else if (step) d += `H${x(p.time).toFixed(1)}V${y(p.value).toFixed(1)}`;
      else d += `L${x(p.time).toFixed(1)},${y(p.value).toFixed(1)}`;
    });
    if (step) d += `H${x(now).toFixed(1)}`;
    return svg('path', {class: `series ${l.cls}`, d});
  });
  const legend = lines.length > 1 ? h('ul', {class: 'legend'}, lines.map((l) => h('li', {class: l.cls}, l.name))) : null;
  const summary = `${title}, last ${SPAN_SECONDS / 60} minutes: ${lines.map((l) => `${l.name} now ${l.points.length ? formatValue(l.points[l.points.length - 1].value) : 'no data'}`).join(', ')}${unit ? ` ${unit}` : ''}`;
  return h('figure', {class: 'chart', id},
    h('figcaption', {}, h('span', {class: 'chart-title'}, title), h('span', {class: 'chart-reading'}, reading)),
    svg('svg', {viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': summary, preserveAspectRatio: 'none'},
      svg('title', {}, summary), grid, ticks, paths),
    legend);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * magnitude) return m * magnitude;
  return 10 * magnitude;
}

function formatValue(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1).replace(/\.0$/, '');
  return v.toFixed(2).replace(/\.?0+$/, '') || '0';
}

/** Whether object `a` is a later version than `b` (or there is no `b`), by resourceVersion. */
function newer(a, b) {
  if (!b) return true;
  try {
    return BigInt(a.metadata.resourceVersion || 0) > BigInt(b.metadata.resourceVersion || 0);
  } catch {
    return true;
  }
}
