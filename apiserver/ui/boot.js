// Starts the console: loads its style sheet and its modules, and loads the page again when the
// network fails under them. Chromium fails every request in flight when it sees a network
// interface come or go (ERR_NETWORK_CHANGED: on a machine that runs containers, whenever one
// starts or stops; see docs/console.md), and a module that failed to load cannot be loaded
// again in the same page. A classic script, so that it runs even when a module would not.

(() => {
  // For the tests: this script ran (a page whose script was lost to the network is blank).
  document.documentElement.dataset.booted = 'true';
  const KEY = 'stratus-console-reloads';
  const MAX_RELOADS = 5;
  const reloads = Number(sessionStorage.getItem(KEY)) || 0;
  let failed = false;

  function fail(what) {
    if (failed) return;
    failed = true;
    if (reloads >= MAX_RELOADS) {
      const main = document.getElementById('main');
      const message = document.createElement('p');
      message.className = 'message error';
      message.setAttribute('role', 'alert');
      message.textContent = `The console could not load ${what} after ${MAX_RELOADS} tries: check the connection to the API server and reload the page.`;
      main.replaceChildren(message);
      sessionStorage.removeItem(KEY);
      return;
    }
    sessionStorage.setItem(KEY, String(reloads + 1));
    setTimeout(() => location.reload(), 250 * 2 ** reloads);
  }

  // The style sheet: a page without it still works, but one that failed (it has no sheet once
  // the page has loaded) is asked for again.
  window.addEventListener('load', () => {
    const sheet = document.querySelector('link[rel="stylesheet"]');
    if (!sheet || sheet.sheet) return;
    const again = sheet.cloneNode();
    again.href = `${sheet.getAttribute('href')}?again=${Date.now()}`;
    sheet.replaceWith(again);
  }, {once: true});

  const app = document.createElement('script');
  app.type = 'module';
  app.src = '/ui/assets/app.js';
  app.addEventListener('error', () => fail('its scripts'));
  // app.js says when it has started: the count of reloads starts again.
  window.addEventListener('stratus-console-started', () => sessionStorage.removeItem(KEY), {once: true});
  document.head.append(app);
})();
