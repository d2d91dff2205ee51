// The login page: user name and password, sent to POST /ui/session, which sets the session
// cookie (the page never sees the token).

import * as api from './api.js';
import {h, replace} from './dom.js';

/** Renders the form into `main`; calls `onLoggedIn(session)` once the server accepts it. */
export function render(main, {message, onLoggedIn}) {
  const status = h('p', {id: 'login-message', class: 'message', role: 'status', 'aria-live': 'polite'}, message || '');
  status.hidden = !message;
  const username = h('input', {id: 'username', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false'});
  const password = h('input', {id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true});
  const submit = h('button', {type: 'submit', id: 'login'}, 'Log in');
  const form = h('form', {class: 'login', 'aria-labelledby': 'login-title'},
    h('h1', {id: 'login-title'}, 'Log in to Stratus'),
    status,
    h('label', {for: 'username'}, 'User name'), username,
    h('label', {for: 'password'}, 'Password'), password,
    submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    status.hidden = true;
    try {
      const session = await api.login(username.value.trim(), password.value);
      onLoggedIn(session);
    } catch (error) {
      status.textContent = describe(error);
      status.className = 'message error';
      status.setAttribute('role', 'alert');
      status.hidden = false;
      password.value = '';
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  replace(main, form);
  username.focus();
  return () => {};
}

function describe(error) {
  if (!(error instanceof api.ApiError)) return `The API cannot be reached: ${error.message}`;
  switch (error.status) {
    case 401:
      return 'Wrong user name or password.';
    case 429:
      return `${error.message.replace(/^./, (c) => c.toUpperCase())}.`;
    default:
      return `Logging in failed: ${error.message}`;
  }
}
