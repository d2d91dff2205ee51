// The deploy form: a Service as a Knative / Cloud Run manifest (`serving.knative.dev/v1`), the
// same document `stratus apply -f` takes, built from the form's fields and sent to the API:
// created (POST), or applied over the Service of that name when the user chose to update it
// (PATCH, as `stratus apply` does). The API is the authority on what is valid: the causes of
// its 422 name fields (`spec.template.spec.containers[0].resources.limits.memory`), and each
// message is shown at the form field it names. "View YAML" shows the manifest the form will
// send, for the CLI.

import * as api from './api.js';
import {h, replace} from './dom.js';

const KNATIVE = 'serving.knative.dev/v1';
const MIN_SCALE = 'autoscaling.knative.dev/minScale';
const MAX_SCALE = 'autoscaling.knative.dev/maxScale';
const CPU_THROTTLING = 'run.googleapis.com/cpu-throttling';
/** Cloud Run's switch for "allow unauthenticated": "true" is public, "false" private. */
const INVOKER_IAM_DISABLED = 'run.googleapis.com/invoker-iam-disabled';
/** Stratus's own way to mark a Service private (read when editing one). */
const INVOKER = 'stratus.dev/invoker';
const DNS_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

const CONTAINER = 'spec.template.spec.containers[0]';

/**
 * Where the API's field paths point in the form: the longest prefix that matches a cause's
 * field names the form field. Variables (`env[N]`) are matched to their rows separately.
 */
const FIELDS = [
  ['metadata.name', 'name'],
  [`${CONTAINER}.image`, 'image'],
  [`${CONTAINER}.ports`, 'port'],
  [`${CONTAINER}.resources.limits.cpu`, 'cpu'],
  [`${CONTAINER}.resources.requests.cpu`, 'cpu'],
  [`${CONTAINER}.resources.limits.memory`, 'memory'],
  [`${CONTAINER}.resources.requests.memory`, 'memory'],
  ['spec.template.spec.containerConcurrency', 'concurrency'],
  ['spec.template.spec.timeoutSeconds', 'timeout'],
  ['spec.template.spec.scaling.minInstances', 'min'],
  ['spec.template.spec.scaling.maxInstances', 'max'],
  [`spec.template.metadata.annotations[${MIN_SCALE}]`, 'min'],
  [`spec.template.metadata.annotations[${MAX_SCALE}]`, 'max'],
  ['spec.template.spec.cpuThrottling', 'billing'],
  [`spec.template.metadata.annotations[${CPU_THROTTLING}]`, 'billing'],
  [`metadata.annotations[${INVOKER_IAM_DISABLED}]`, 'access'],
];

/**
 * Renders the form into `main` for `namespace`; with `name`, the Service of that name is read
 * and the form starts from it, set to update it. Returns a function that stops the page.
 */
export function render(main, {namespace, name = ''}) {
  if (!namespace) {
    replace(main, h('h1', {}, 'Deploy a service'),
      h('p', {class: 'notice'}, 'You may not list Services in any namespace. Ask an admin of your tenant for a role in one.'));
    return () => {};
  }
  const stop = new AbortController();
  const form = new DeployForm(namespace, stop.signal);
  replace(main, form.element);
  form.focus();
  form.offerImages();
  if (name) form.load(name);
  return () => stop.abort();
}

/** The form, its rows of variables, the YAML view and what the API answered. */
class DeployForm {
  constructor(namespace, signal) {
    this.namespace = namespace;
    this.signal = signal;
    /** Error slots by form field: `{input, error}`. */
    this.fields = new Map();

    this.name = this.input('name', 'Service name', {autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none', maxlength: 63,
      hint: 'Lowercase letters, digits and "-", starting with a letter.'});
    this.images = h('datalist', {id: 'deploy-images'});
    this.imagesNote = h('p', {class: 'hint', id: 'deploy-images-note'});
    this.imagesNote.hidden = true;
    this.image = this.input('image', 'Container image', {list: 'deploy-images', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none',
      placeholder: 'registry.example/team/app:v1', hint: 'Images uploaded to this namespace are offered as you type.'});
    this.port = this.input('port', 'Container port', {type: 'number', min: 1, max: 65535, step: 1, placeholder: '8080',
      hint: 'The port the container listens on; it is given to it as $PORT. Empty: 8080.'});
    this.cpu = this.input('cpu', 'CPU limit', {placeholder: '1', spellcheck: 'false', hint: 'vCPUs: 1, 2, or 500m for half of one. Empty: the platform default.'});
    this.memory = this.input('memory', 'Memory limit', {placeholder: '512Mi', spellcheck: 'false', hint: 'Bytes with a suffix: 256Mi, 1Gi. Empty: the platform default.'});
    this.concurrency = this.input('concurrency', 'Concurrency', {type: 'number', min: 0, step: 1, placeholder: '80',
      hint: 'Requests one instance serves at once; 0 lets the platform decide.'});
    this.min = this.input('min', 'Minimum instances', {type: 'number', min: 0, step: 1, placeholder: '0', hint: 'Kept running when idle. 0 scales to zero.'});
    this.max = this.input('max', 'Maximum instances', {type: 'number', min: 0, step: 1, placeholder: '100', hint: 'The most instances it scales to.'});
    this.timeout = this.input('timeout', 'Request timeout (seconds)', {type: 'number', min: 1, step: 1, placeholder: '300',
      hint: 'How long a request may take before it is cut off.'});

    this.billing = this.choice('billing', 'Billing', [
      ['request', 'Request-based', 'CPU only while a request is being served; billed per request and for that time.'],
      ['instance', 'Instance-based', 'CPU always allocated; billed for the whole life of each instance.'],
    ]);
    this.access = this.choice('access', 'Access', [
      ['public', 'Public', 'Anyone who can reach the gateway may call it.'],
      ['private', 'Private (require authentication)', 'Only callers with a token that may invoke it.'],
    ]);

    this.envBody = h('div', {class: 'rows', id: 'deploy-env-rows'});
    this.secretBody = h('div', {class: 'rows', id: 'deploy-secret-rows'});
    this.rowCount = 0;
    /** The variable rows in the order the manifest lists them (set by `manifest()`). */
    this.envOrder = [];

    this.update = h('input', {type: 'checkbox', id: 'deploy-update', name: 'update'});
    this.formError = h('div', {id: 'deploy-error', class: 'message error', role: 'alert', tabindex: '-1'});
    this.formError.hidden = true;
    this.submit = h('button', {type: 'submit', id: 'deploy-submit'}, 'Deploy');
    this.yamlToggle = h('button', {type: 'button', id: 'deploy-view-yaml', 'aria-expanded': 'false', 'aria-controls': 'deploy-yaml',
      onclick: () => this.toggleYaml()}, 'View YAML');

    this.yamlText = h('pre', {id: 'deploy-yaml-text', class: 'yaml', tabindex: '0', 'aria-label': 'The manifest as YAML'});
    this.copyState = h('span', {id: 'deploy-copy-state', class: 'hint', role: 'status', 'aria-live': 'polite'});
    this.yamlPanel = h('section', {id: 'deploy-yaml', class: 'yaml-panel', 'aria-labelledby': 'deploy-yaml-title'},
      h('div', {class: 'yaml-head'},
        h('h2', {id: 'deploy-yaml-title'}, 'The manifest'),
        h('button', {type: 'button', id: 'deploy-copy-yaml', onclick: () => this.copyYaml()}, 'Copy'),
        this.copyState),
      h('p', {class: 'hint'}, 'What Deploy sends. Save it as a file and run ', h('code', {}, 'stratus apply -f FILE'), ' to do the same from the CLI.'),
      this.yamlText);
    this.yamlPanel.hidden = true;

    this.form = h('form', {class: 'deploy', id: 'deploy-form', novalidate: true, 'aria-labelledby': 'deploy-title'},
      this.formError,
      this.section('Container',
        this.field('name'),
        this.field('image'), this.images, this.imagesNote,
        this.field('port')),
      h('fieldset', {class: 'group'},
        h('legend', {}, 'Environment variables'),
        this.envBody,
        h('button', {type: 'button', id: 'deploy-add-env', onclick: () => this.addEnv().name.focus()}, 'Add a variable'),
        h('h3', {}, 'Variables from secrets'),
        this.secretBody,
        h('button', {type: 'button', id: 'deploy-add-secret', onclick: () => this.addSecret().name.focus()}, 'Add a variable from a secret')),
      this.section('Resources', this.field('cpu'), this.field('memory')),
      this.section('Scaling', this.field('concurrency'), this.field('min'), this.field('max')),
      this.billing.element,
      this.section('Requests', this.field('timeout')),
      this.access.element,
      h('div', {class: 'update-choice'},
        this.update, ' ', h('label', {for: 'deploy-update'}, 'Update the service if one of this name already exists'),
        h('p', {class: 'hint', id: 'deploy-update-hint'},
          'An update replaces its template with this one: fields the form does not show (probes, commands, traffic splits) go back to their defaults.')),
      h('div', {class: 'actions'}, this.submit, this.yamlToggle,
        h('a', {href: `#/services/${encodeURIComponent(namespace)}`, id: 'deploy-cancel'}, 'Cancel')));
    this.update.setAttribute('aria-describedby', 'deploy-update-hint');

    this.element = h('div', {class: 'deploy-page'},
      h('div', {class: 'page-head'}, h('h1', {id: 'deploy-title'}, 'Deploy a service'),
        h('p', {class: 'notice'}, `In namespace ${namespace}`)),
      h('div', {class: 'deploy-columns'}, this.form, this.yamlPanel));

    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.deploy();
    });
    this.form.addEventListener('input', () => this.refreshYaml());
    this.form.addEventListener('change', () => this.refreshYaml());
  }

  focus() {
    this.name.focus();
  }

  // ------------------------------------------------------------------ building the form

  /** A labelled input with a hint and a slot for its error; `attrs.hint` is the hint. */
  input(key, label, {hint, ...attrs}) {
    const id = `deploy-${key}`;
    const input = h('input', {id, name: key, ...attrs, 'aria-describedby': `${id}-hint ${id}-error`});
    const error = h('p', {class: 'field-error', id: `${id}-error`});
    error.hidden = true;
    this.fields.set(key, {input, error, label, hint: h('p', {class: 'hint', id: `${id}-hint`}, hint || '')});
    return input;
  }

  /** The label, input, hint and error of `key`, as a block of the form. */
  field(key) {
    const {input, error, label, hint} = this.fields.get(key);
    return h('div', {class: 'field'}, h('label', {for: input.id}, label), input, hint, error);
  }

  section(legend, ...children) {
    return h('fieldset', {class: 'group'}, h('legend', {}, legend), ...children);
  }

  /** A group of radio buttons: `options` are [value, label, hint]; the first is checked. */
  choice(key, legend, options) {
    const error = h('p', {class: 'field-error', id: `deploy-${key}-error`});
    error.hidden = true;
    const radios = options.map(([value, label, hint], i) => {
      const id = `deploy-${key}-${value}`;
      const radio = h('input', {type: 'radio', id, name: key, value, checked: i === 0, 'aria-describedby': `${id}-hint`});
      return {radio, row: h('div', {class: 'radio'}, radio, h('label', {for: id}, label), h('p', {class: 'hint', id: `${id}-hint`}, hint))};
    });
    const element = h('fieldset', {class: 'group', id: `deploy-${key}`, 'aria-describedby': error.id},
      h('legend', {}, legend), radios.map((r) => r.row), error);
    this.fields.set(key, {input: radios[0].radio, error, label: legend});
    return {
      element,
      get value() {
        return radios.find((r) => r.radio.checked)?.radio.value || options[0][0];
      },
      set value(v) {
        for (const r of radios) r.radio.checked = r.radio.value === v;
      },
    };
  }

  /** Adds a row for a variable with a value; returns its inputs. */
  addEnv(name = '', value = '') {
    const n = ++this.rowCount;
    const row = {kind: 'env', n};
    row.name = h('input', {id: `deploy-env-name-${n}`, class: 'env-name', value: name, spellcheck: 'false', autocomplete: 'off', 'aria-describedby': `deploy-env-error-${n}`});
    row.value = h('input', {id: `deploy-env-value-${n}`, class: 'env-value', value, spellcheck: 'false', autocomplete: 'off'});
    row.error = h('p', {class: 'field-error', id: `deploy-env-error-${n}`});
    row.error.hidden = true;
    row.element = h('div', {class: 'row', 'data-row': n},
      h('div', {class: 'field'}, h('label', {for: row.name.id}, 'Name'), row.name),
      h('div', {class: 'field'}, h('label', {for: row.value.id}, 'Value'), row.value),
      h('button', {type: 'button', class: 'remove', 'aria-label': `Remove variable ${n}`, onclick: () => this.removeRow(row)}, 'Remove'),
      row.error);
    // The element keeps its row, for `rows()`.
    row.element.row = row;
    this.envBody.append(row.element);
    this.refreshYaml();
    return row;
  }

  /** Adds a row for a variable read from a key of a Secret; returns its inputs. */
  addSecret(name = '', secret = '', key = '') {
    const n = ++this.rowCount;
    const row = {kind: 'secret', n};
    row.name = h('input', {id: `deploy-secret-env-${n}`, class: 'env-name', value: name, spellcheck: 'false', autocomplete: 'off', 'aria-describedby': `deploy-secret-error-${n}`});
    row.secret = h('input', {id: `deploy-secret-name-${n}`, class: 'secret-name', value: secret, spellcheck: 'false', autocomplete: 'off'});
    row.key = h('input', {id: `deploy-secret-key-${n}`, class: 'secret-key', value: key, spellcheck: 'false', autocomplete: 'off'});
    row.error = h('p', {class: 'field-error', id: `deploy-secret-error-${n}`});
    row.error.hidden = true;
    row.element = h('div', {class: 'row', 'data-row': n},
      h('div', {class: 'field'}, h('label', {for: row.name.id}, 'Variable'), row.name),
      h('div', {class: 'field'}, h('label', {for: row.secret.id}, 'Secret'), row.secret),
      h('div', {class: 'field'}, h('label', {for: row.key.id}, 'Key'), row.key),
      h('button', {type: 'button', class: 'remove', 'aria-label': `Remove secret variable ${n}`, onclick: () => this.removeRow(row)}, 'Remove'),
      row.error);
    // The element keeps its row, for `rows()`.
    row.element.row = row;
    this.secretBody.append(row.element);
    this.refreshYaml();
    return row;
  }

  removeRow(row) {
    row.element.remove();
    this.refreshYaml();
    this.form.querySelector(row.kind === 'env' ? '#deploy-add-env' : '#deploy-add-secret')?.focus();
  }

  rows(kind) {
    const body = kind === 'env' ? this.envBody : this.secretBody;
    return [...body.children].map((el) => el.row);
  }

  // ------------------------------------------------------------------ the manifest

  /**
   * The Service the form describes, as a Knative manifest. Empty fields are left out (the
   * platform's defaults apply); the choices are always written. Also records the variable
   * rows in the order of `env`, so that an error about `env[N]` finds its row.
   */
  manifest() {
    const text = (input) => input.value.trim();
    const number = (input) => (text(input) === '' ? undefined : Number(text(input)));
    const container = {image: text(this.image)};
    const port = number(this.port);
    if (port !== undefined) container.ports = [{containerPort: port}];
    const env = [];
    this.envOrder = [];
    for (const row of this.rows('env')) {
      if (!text(row.name) && !row.value.value) continue;
      env.push({name: text(row.name), value: row.value.value});
      this.envOrder.push(row);
    }
    for (const row of this.rows('secret')) {
      if (!text(row.name) && !text(row.secret) && !text(row.key)) continue;
      env.push({name: text(row.name), valueFrom: {secretKeyRef: {name: text(row.secret), key: text(row.key)}}});
      this.envOrder.push(row);
    }
    if (env.length) container.env = env;
    const limits = {};
    if (text(this.cpu)) limits.cpu = text(this.cpu);
    if (text(this.memory)) limits.memory = text(this.memory);
    if (Object.keys(limits).length) container.resources = {limits};

    const annotations = {};
    if (number(this.min) !== undefined) annotations[MIN_SCALE] = String(number(this.min));
    if (number(this.max) !== undefined) annotations[MAX_SCALE] = String(number(this.max));
    annotations[CPU_THROTTLING] = this.billing.value === 'instance' ? 'false' : 'true';

    const spec = {};
    if (number(this.concurrency) !== undefined) spec.containerConcurrency = number(this.concurrency);
    if (number(this.timeout) !== undefined) spec.timeoutSeconds = number(this.timeout);
    spec.containers = [container];

    return {
      apiVersion: KNATIVE,
      kind: 'Service',
      metadata: {
        name: text(this.name),
        namespace: this.namespace,
        annotations: {[INVOKER_IAM_DISABLED]: this.access.value === 'private' ? 'false' : 'true'},
      },
      spec: {template: {metadata: {annotations}, spec}},
    };
  }

  // ------------------------------------------------------------------ checks and errors

  /** Obvious mistakes, found before anything is sent: `[[fieldKey or row, message]…]`. */
  check() {
    const problems = [];
    const name = this.name.value.trim();
    if (!name) problems.push(['name', 'A service needs a name.']);
    else if (!DNS_LABEL.test(name)) problems.push(['name', 'Use lowercase letters, digits and "-", starting with a letter and not ending with "-" (at most 63).']);
    if (!this.image.value.trim()) problems.push(['image', 'Choose the container image to run.']);
    for (const key of ['port', 'concurrency', 'min', 'max', 'timeout']) {
      const {input, label} = this.fields.get(key);
      if (input.validity.badInput || (input.value !== '' && !Number.isInteger(Number(input.value)))) {
        problems.push([key, `${label} must be a whole number.`]);
      }
    }
    const port = Number(this.port.value);
    if (this.port.value !== '' && Number.isInteger(port) && (port < 1 || port > 65535)) {
      problems.push(['port', 'A port is between 1 and 65535.']);
    }
    const [min, max] = [this.min.value, this.max.value].map(Number);
    if (this.min.value !== '' && this.max.value !== '' && max !== 0 && min > max) {
      problems.push(['max', `At least the minimum (${min}).`]);
    }
    const seen = new Set();
    for (const row of [...this.rows('env'), ...this.rows('secret')]) {
      const name = row.name.value.trim();
      const blank = row.kind === 'env' ? !name && !row.value.value : !name && !row.secret.value.trim() && !row.key.value.trim();
      if (blank) continue;
      if (!name) problems.push([row, 'A variable needs a name.']);
      else if (!ENV_NAME.test(name)) problems.push([row, `${JSON.stringify(name)}: letters, digits, "_", "-" and ".", not starting with a digit.`]);
      else if (seen.has(name)) problems.push([row, `${name} is set twice.`]);
      seen.add(name);
      if (row.kind === 'secret' && (!row.secret.value.trim() || !row.key.value.trim())) {
        problems.push([row, 'Name the secret and the key to read.']);
      }
    }
    return problems;
  }

  clearErrors() {
    this.formError.hidden = true;
    replace(this.formError);
    for (const {input, error} of this.fields.values()) {
      error.hidden = true;
      replace(error);
      input.removeAttribute('aria-invalid');
    }
    for (const row of [...this.rows('env'), ...this.rows('secret')]) {
      row.error.hidden = true;
      replace(row.error);
      row.name.removeAttribute('aria-invalid');
    }
  }

  /** Shows `message` at `target` (a field's key, a variable row, or null for the form). */
  showError(target, message) {
    let slot = this.formError;
    let input = null;
    if (typeof target === 'string' && this.fields.has(target)) {
      ({error: slot, input} = this.fields.get(target));
    } else if (target && target.error) {
      slot = target.error;
      input = target.name;
    }
    slot.append(h('span', {class: 'error-line'}, message));
    slot.hidden = false;
    if (input) input.setAttribute('aria-invalid', 'true');
  }

  /** The form field (a key or a variable row) an API field path names, or null. */
  target(path) {
    const env = path.match(/^spec\.template\.spec\.containers\[0\]\.env\[(\d+)\]/);
    if (env) return this.envOrder[Number(env[1])] || null;
    let best = null;
    for (const [prefix, key] of FIELDS) {
      const follows = path.length === prefix.length || '.['.includes(path[prefix.length]);
      if (path.startsWith(prefix) && follows && (!best || prefix.length > best[0].length)) best = [prefix, key];
    }
    return best ? best[1] : null;
  }

  /** Puts each of the API's causes at its field; what names no field goes above the form. */
  showApiError(error) {
    const causes = error.causes || [];
    if (causes.length === 0) {
      this.showError(null, describe(error));
      return;
    }
    let placed = 0;
    for (const cause of causes) {
      const target = this.target(cause.field || '');
      const message = cause.message || error.message;
      if (target) {
        this.showError(target, message);
        placed++;
      } else {
        this.showError(null, cause.field ? `${cause.field}: ${message}` : message);
      }
    }
    if (placed) this.showError(null, `The API refused the service: ${placed === 1 ? 'see the field marked below' : `see the ${placed} fields marked below`}. Nothing was deployed.`);
  }

  focusFirstError() {
    const invalid = this.form.querySelector('[aria-invalid="true"]');
    (invalid || this.formError).focus?.();
    if (!invalid) this.formError.scrollIntoView({block: 'nearest'});
  }

  // ------------------------------------------------------------------ talking to the API

  async deploy() {
    this.clearErrors();
    const service = this.manifest();
    const problems = this.check();
    if (problems.length) {
      for (const [target, message] of problems) this.showError(target, message);
      this.focusFirstError();
      return;
    }
    this.submit.disabled = true;
    this.submit.textContent = 'Deploying…';
    const name = service.metadata.name;
    const collection = api.collection('services', this.namespace);
    try {
      if (this.update.checked) {
        await api.request('PATCH', `${collection}/${encodeURIComponent(name)}`, service, {signal: this.signal});
      } else {
        await api.request('POST', collection, service, {signal: this.signal});
      }
      location.hash = `#/services/${encodeURIComponent(this.namespace)}`;
    } catch (error) {
      if (this.signal.aborted) return;
      if (error instanceof api.ApiError && error.status === 409 && !this.update.checked) {
        this.showError('name', `A service named ${name} already exists in ${this.namespace}. Choose another name, or tick "Update the service" below to replace its template.`);
      } else if (error instanceof api.ApiError) {
        this.showApiError(error);
      } else {
        this.showError(null, `The API cannot be reached: ${error.message}`);
      }
      this.focusFirstError();
    } finally {
      this.submit.disabled = false;
      this.submit.textContent = 'Deploy';
    }
  }

  /** Offers the images uploaded to the namespace; an older server without them offers none. */
  async offerImages() {
    try {
      const list = await api.namespaceImages(this.namespace, {signal: this.signal});
      replace(this.images, list.map((i) => h('option', {value: i.image}, i.name && i.tag ? `${i.name}:${i.tag}` : null)));
      if (list.length) {
        this.imagesNote.textContent = `${list.length} image${list.length === 1 ? '' : 's'} uploaded to ${this.namespace}.`;
        this.imagesNote.hidden = false;
      }
    } catch (error) {
      if (this.signal.aborted) return;
      this.imagesNote.textContent = `The uploaded images could not be listed: ${error.message}`;
      this.imagesNote.hidden = false;
    }
  }

  /** Starts the form from the stored Service `name`, set to update it. */
  async load(name) {
    this.name.value = name;
    this.update.checked = true;
    try {
      const svc = await api.request('GET', `${api.collection('services', this.namespace)}/${encodeURIComponent(name)}`, undefined, {signal: this.signal});
      this.fill(svc);
      this.element.querySelector('#deploy-title').textContent = `Update ${name}`;
    } catch (error) {
      if (this.signal.aborted) return;
      this.showError(null, `Service ${name} could not be read: ${error.message}`);
    }
    this.refreshYaml();
  }

  /** Fills the form from a stored Service (the API's form of it). */
  fill(svc) {
    const template = svc.spec?.template || {};
    const spec = template.spec || {};
    const container = spec.containers?.[0] || {};
    const set = (input, value) => {
      input.value = value === undefined || value === null ? '' : String(value);
    };
    set(this.image, container.image);
    set(this.port, container.ports?.[0]?.containerPort);
    set(this.cpu, container.resources?.limits?.cpu);
    set(this.memory, container.resources?.limits?.memory);
    set(this.concurrency, spec.containerConcurrency);
    set(this.timeout, spec.timeoutSeconds);
    set(this.min, spec.scaling?.minInstances);
    set(this.max, spec.scaling?.maxInstances);
    this.billing.value = spec.cpuThrottling === false ? 'instance' : 'request';
    const annotations = svc.metadata?.annotations || {};
    const private_ = (annotations[INVOKER] || '').toLowerCase() === 'authenticated'
      || (annotations[INVOKER_IAM_DISABLED] || '').toLowerCase() === 'false';
    this.access.value = private_ ? 'private' : 'public';
    replace(this.envBody);
    replace(this.secretBody);
    for (const v of container.env || []) {
      const ref = v.valueFrom?.secretKeyRef;
      if (ref) this.addSecret(v.name, ref.name, ref.key);
      else this.addEnv(v.name, v.value || '');
    }
  }

  // ------------------------------------------------------------------ the YAML view

  toggleYaml() {
    const show = this.yamlPanel.hidden;
    this.yamlPanel.hidden = !show;
    this.yamlToggle.setAttribute('aria-expanded', String(show));
    this.yamlToggle.textContent = show ? 'Hide YAML' : 'View YAML';
    this.refreshYaml();
    if (show) this.yamlText.focus();
  }

  refreshYaml() {
    if (this.yamlPanel.hidden) return;
    this.yamlText.textContent = toYaml(this.manifest());
    this.copyState.textContent = '';
  }

  async copyYaml() {
    const text = this.yamlText.textContent;
    try {
      await navigator.clipboard.writeText(text);
      this.copyState.textContent = 'Copied.';
    } catch {
      // No clipboard (not allowed here): select the text for the user to copy.
      const range = document.createRange();
      range.selectNodeContents(this.yamlText);
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      this.copyState.textContent = 'The browser did not allow copying: the text is selected, press Ctrl+C.';
    }
  }
}

function describe(error) {
  switch (error.status) {
    case 403:
      return `Not allowed: ${error.message}`;
    case 404:
      return `Not found: ${error.message}`;
    default:
      return error.message;
  }
}

// ---------------------------------------------------------------- YAML

/**
 * The YAML text of a JSON value (objects, arrays, strings, numbers, booleans, null), in block
 * style as a person writes a manifest. A string is written plain only when YAML cannot read
 * it as anything else; otherwise double-quoted, as JSON writes it (JSON's strings are YAML's).
 */
export function toYaml(value) {
  const out = [];
  if (isBlock(value)) emit(value, 0, out);
  else out.push(scalar(value));
  return `${out.join('\n')}\n`;
}

function isBlock(v) {
  return v !== null && typeof v === 'object' && Object.keys(v).length > 0;
}

function emit(value, indent, out) {
  const pad = '  '.repeat(indent);
  if (Array.isArray(value)) {
    for (const item of value) {
      if (isBlock(item)) {
        const start = out.length;
        emit(item, indent + 1, out);
        out[start] = `${pad}- ${out[start].slice(pad.length + 2)}`;
      } else {
        out.push(`${pad}- ${scalar(item)}`);
      }
    }
    return;
  }
  for (const [key, v] of Object.entries(value)) {
    if (isBlock(v)) {
      out.push(`${pad}${plain(key) ? key : JSON.stringify(key)}:`);
      emit(v, indent + 1, out);
    } else {
      out.push(`${pad}${plain(key) ? key : JSON.stringify(key)}: ${scalar(v)}`);
    }
  }
}

function scalar(v) {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return '[]';
  if (typeof v === 'object') return '{}';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return plain(v) ? v : JSON.stringify(v);
}

const RESERVED = /^(true|false|yes|no|on|off|y|n|null|nan|inf|~)$/i;

/** Whether `s` reads back as this very string when written without quotes. */
function plain(s) {
  if (!/^[A-Za-z0-9_/][A-Za-z0-9_/.:@+=-]*$/.test(s) || s.endsWith(':') || RESERVED.test(s)) return false;
  // Starting with a digit: only a number followed by a unit (512Mi, 500m, 10s), never
  // something YAML reads as a number, date or time (1e3, 0x1f, 1:30, 2024-01-01).
  if (/^[0-9]/.test(s)) return /^[0-9]+(\.[0-9]+)?[A-Za-z]+$/.test(s) && !/^[0-9]+(\.[0-9]+)?e[0-9]*$/i.test(s);
  return true;
}
