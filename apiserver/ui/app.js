// The console's frame: the session, the header (namespace picker, user, log out) and the
// router. Pages are modules with `render(main, context)` that return a function which stops
// whatever the page left running (watches, timers). Routes are `#/PAGE/ARG…`.

import * as api from './api.js';
import * as login from './login.js';
import * as services from './services.js';
import * as deploy from './deploy.js';
import * as billing from './billing.js';
import * as nodes from './nodes.js';
import * as images from './images.js';
import * as service from './service.js';

const EXPIRED = 'Your session expired, log in again.';
const NAMESPACE_KEY = 'stratus.namespace';

const main = document.getElementById('main');
const bar = document.getElementById('session');
const picker = document.getElementById('namespace');
const who = document.getElementById('who');

/** The logged-in session ({username, tenant, namespaces, expiresAt}), or null. */
let current = null;
/** Stops the page on screen. */
let stopPage = () => {};
/** Checks the session when its token expires. */
let expiryTimer = 0;
/** A message for the login page (why the user is there). */
let notice = '';

function route() {
  const hash = location.hash.startsWith('#/') ? location.hash.slice(2) : '';
  const [page = '', ...args] = hash.split('/').map(decodeURIComponent);
  return {page, args};
}

function go(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

/** The namespace to show: the route's, else the last one picked, else the first offered. */
function chosenNamespace(wanted) {
  const offered = current?.namespaces || [];
  for (const ns of [wanted, sessionStorage.getItem(NAMESPACE_KEY)]) {
    if (ns && offered.includes(ns)) return ns;
  }
  return offered[0] || '';
}

function showHeader() {
  bar.hidden = !current;
  if (!current) return;
  showNodesLink();
  who.textContent = current.tenant ? `${current.username} (${current.tenant})` : current.username;
  picker.replaceChildren(...current.namespaces.map((ns) => new Option(ns, ns)));
  picker.disabled = current.namespaces.length === 0;
}

function watchExpiry() {
  clearTimeout(expiryTimer);
  if (!current?.expiresAt) return;
  // The cookie lasts as long as the token: once it is gone, asking who we are answers 401.
  const wait = Math.max(current.expiresAt * 1000 - Date.now() + 500, 1000);
  expiryTimer = setTimeout(async () => {
    try {
      if (!(await api.session())) endSession(EXPIRED);
      else watchExpiry();
    } catch {
      expiryTimer = setTimeout(watchExpiry, 5000);
    }
  }, Math.min(wait, 2 ** 31 - 1));
}

function endSession(message) {
  if (!current) return;
  current = null;
  clearTimeout(expiryTimer);
  notice = message;
  showHeader();
  go('#/login');
}

async function show() {
  stopPage();
  stopPage = () => {};
  const {page, args} = route();
  if (!current || page === 'login') {
    if (current) {
      go('#/services');
      return;
    }
    const message = notice;
    notice = '';
    document.title = 'Log in · Stratus console';
    stopPage = login.render(main, {
      message,
      onLoggedIn(session) {
        current = session;
        showHeader();
        watchExpiry();
        go('#/services');
      },
    }) || stopPage;
    return;
  }
  switch (page) {
    case 'services': {
      const ns = chosenNamespace(args[0]);
      if (ns && args[0] !== ns) {
        go(`#/services/${encodeURIComponent(ns)}`);
        return;
      }
      if (ns) {
        picker.value = ns;
        sessionStorage.setItem(NAMESPACE_KEY, ns);
      }
      if (ns && args[1]) {
        document.title = `${args[1]} in ${ns} · Stratus console`;
        stopPage = service.render(main, {namespace: ns, name: args[1]}) || stopPage;
        return;
      }
      document.title = `Services${ns ? ` in ${ns}` : ''} · Stratus console`;
      stopPage = services.render(main, {namespace: ns}) || stopPage;
      return;
    }
    case 'deploy': {
      // #/deploy/NAMESPACE, or #/deploy/NAMESPACE/SERVICE to update that Service.
      const ns = chosenNamespace(args[0]);
      if (ns && args[0] !== ns) {
        go(`#/deploy/${encodeURIComponent(ns)}`);
        return;
      }
      if (ns) {
        picker.value = ns;
        sessionStorage.setItem(NAMESPACE_KEY, ns);
      }
      document.title = `${args[1] ? `Update ${args[1]}` : 'Deploy a service'} · Stratus console`;
      stopPage = deploy.render(main, {namespace: ns, name: args[1] || ''}) || stopPage;
      return;
    }
    case 'billing': {
      // A cluster admin may look at any tenant's bill; everyone else at their own tenant's.
      const admin = current.clusterRole === 'cluster-admin';
      const tenant = (admin && args[0]) || current.tenant;
      document.title = `Billing of ${tenant || 'no tenant'} · Stratus console`;
      stopPage = billing.render(main, {
        tenant,
        mayPickTenant: admin,
        onTenant: (t) => go(`#/billing/${encodeURIComponent(t)}`),
      }) || stopPage;
      return;
    }
    case 'nodes':
      document.title = 'Nodes · Stratus console';
      stopPage = nodes.render(main) || stopPage;
      return;
    case 'images': {
      const ns = chosenNamespace(args[0]);
      if (ns && args[0] !== ns) {
        go(`#/images/${encodeURIComponent(ns)}`);
        return;
      }
      if (ns) {
        picker.value = ns;
        sessionStorage.setItem(NAMESPACE_KEY, ns);
      }
      document.title = `Images${ns ? ` in ${ns}` : ''} · Stratus console`;
      stopPage = images.render(main, {namespace: ns}) || stopPage;
      return;
    }
    default:
      go('#/services');
  }
}

picker.addEventListener('change', () => go(`#/${route().page === 'images' ? 'images' : 'services'}/${encodeURIComponent(picker.value)}`));

document.getElementById('logout').addEventListener('click', async () => {
  try {
    await api.logout();
  } finally {
    current = null;
    clearTimeout(expiryTimer);
    notice = 'You have logged out.';
    showHeader();
    go('#/login');
  }
});

/** Shows the Nodes link only to those the API lets list Nodes. */
async function showNodesLink() {
  const link = document.getElementById('nav-nodes');
  link.hidden = true;
  const asked = current;
  const may = await nodes.allowed();
  if (current === asked) link.hidden = !may;
}

api.onExpired(() => endSession(EXPIRED));
window.addEventListener('hashchange', show);

async function start() {
  window.dispatchEvent(new Event('stratus-console-started'));
  try {
    current = await api.session();
  } catch (error) {
    notice = `The API cannot be reached: ${error.message}`;
  }
  showHeader();
  watchExpiry();
  show();
}

start();
