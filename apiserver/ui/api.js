// The console's one way to talk to the API: the same HTTP/JSON paths and watch streams every
// client uses, authenticated by the session cookie. The cookie is HttpOnly (no script reads
// it); the API takes it only with the X-Stratus-Console header, which every request here sends.

const CONSOLE_HEADER = {'X-Stratus-Console': '1'};
/** A watch stream that says nothing for this long is dead (the server's heartbeat is 10 s). */
const SILENCE_MS = 25_000;
/** A read that has no answer in this long is tried again. */
const ATTEMPT_MS = 10_000;
/** How long the read before a create may take: the create waits for it. */
const PRE_READ_MS = 3_000;
const API = '/apis/stratus.dev/v1';

/** An answer of the API that is not a success: `status` (HTTP), `reason`, `causes`. */
export class ApiError extends Error {
  constructor(status, message, reason = '', causes = []) {
    super(message);
    this.status = status;
    this.reason = reason;
    this.causes = causes;
  }
}

const expiredListeners = new Set();

/**
 * Calls `listener` when the API answers 401 to a request of the session: the session has
 * expired or was revoked. Returns a function that removes the listener.
 */
export function onExpired(listener) {
  expiredListeners.add(listener);
  return () => expiredListeners.delete(listener);
}

function expired() {
  for (const listener of expiredListeners) listener();
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: the status line says enough.
  }
  const message = body?.message || body?.error_description || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, message, body?.reason || '', body?.details?.causes || []);
}

/** Methods whose request can be sent again without doing anything twice. */
const REPEATABLE = new Set(['GET', 'HEAD', 'PATCH']);

/**
 * fetch, sent again when the network fails under it. Chromium fails every request in flight
 * when it sees a network interface come or go (ERR_NETWORK_CHANGED); on a machine that runs
 * containers that is whenever one starts or stops. And a connection can die without a word:
 * a try that has no answer in `attemptMs` (ATTEMPT_MS) is given up. Up to `tries` (four) tries,
 * 250 ms, 500 ms and 1 s apart; an answer of the API, whatever its status, is never asked
 * again. Only for requests that are safe to repeat: a write that failed this way may have been
 * done.
 */
async function fetchAgain(path, init, {tries = 4, attemptMs = ATTEMPT_MS} = {}) {
  for (let attempt = 0; ; attempt++) {
    const limits = [AbortSignal.timeout(attemptMs), ...(init.signal ? [init.signal] : [])];
    try {
      return await fetch(path, {...init, signal: AbortSignal.any(limits)});
    } catch (error) {
      if (init.signal?.aborted || attempt >= tries - 1) throw error;
      await sleep(250 * 2 ** attempt, init.signal);
    }
  }
}

/**
 * A create (POST of an object named `name` to the collection `path`), sent again when the
 * network fails under it, but only while the object provably does not exist: a read of it
 * answers 404, so the create was not made and cannot be made twice.
 *
 * The answer to a create that was made can be lost too (Chromium fails a request in flight on
 * ERR_NETWORK_CHANGED whether or not the server has done it, and sends a request again by
 * itself when a kept-alive connection closes before its answer: that second create answers
 * 409). So the name is read first: when it was free just before, an object of that name found
 * after a try broke, or a 409, is this create's doing, and the object as read is the answer.
 * (Someone else creating the same name in that moment would look the same; nothing is
 * overwritten either way.) When the name was taken before, a 409 is the answer, as it is
 * without a failure; when its state before is unknown, the error says to look.
 */
async function createAgain(path, init, name) {
  const objectPath = `${path}/${encodeURIComponent(name)}`;
  const readInit = {method: 'GET', headers: init.headers, credentials: init.credentials, signal: init.signal, cache: 'no-store'};
  const read = () => fetchAgain(objectPath, readInit);
  // What the name was before: 404 free, 200 taken, null unknown. One quick read, asked once
  // more if the network breaks under it, so that the create is not held back for long.
  let before = null;
  try {
    const response = await fetchAgain(objectPath, readInit, {tries: 2, attemptMs: PRE_READ_MS});
    if (response.status === 404 || response.ok) before = response.status;
  } catch (error) {
    if (init.signal?.aborted) throw error;
  }
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (init.signal?.aborted) throw error;
      const lost = () => new TypeError(`${error.message}; the change may or may not have been made, so look before trying again`);
      if (attempt >= 3) throw lost();
      await sleep(250 * 2 ** attempt, init.signal);
      let probe;
      try {
        probe = await read();
      } catch (readError) {
        if (init.signal?.aborted) throw readError;
        throw lost();
      }
      // Not there: this create was not made. Taken before: it cannot have been made, and
      // sent again it answers why (409).
      if (probe.status === 404 || (probe.ok && before === 200)) continue;
      if (probe.ok && before === 404) return probe;
      throw lost();
    }
    if (response.status === 409 && before === 404) {
      let made;
      try {
        made = await read();
      } catch (readError) {
        if (init.signal?.aborted) throw readError;
        return response;
      }
      if (made.ok) return made;
    }
    return response;
  }
}

/**
 * One request to the API as the session's user, its body sent as `contentType`. A 401 ends the
 * session (the listeners of `onExpired` are told) and throws like every other failure, as an
 * ApiError. Reads and PATCHes (an apply of the whole object as application/json, or a merge
 * patch as application/merge-patch+json: either gives the same result however often it is
 * applied) are sent again when the network fails under them, and so is a create while a read
 * shows the object does not exist; a failed replace is not, and its error says so.
 */
export async function request(method, path, body, {signal, contentType = 'application/json'} = {}) {
  const headers = {...CONSOLE_HEADER, Accept: 'application/json'};
  const init = {method, headers, credentials: 'same-origin', signal, cache: 'no-store'};
  if (body !== undefined) {
    headers['Content-Type'] = contentType;
    init.body = JSON.stringify(body);
  }
  let response;
  if (REPEATABLE.has(method)) {
    response = await fetchAgain(path, init);
  } else if (method === 'POST' && typeof body?.metadata?.name === 'string' && body.metadata.name) {
    response = await createAgain(path, init, body.metadata.name);
  } else {
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new TypeError(`${error.message}; the change may or may not have been made, so look before trying again`);
    }
  }
  if (response.status === 401) {
    const error = await errorOf(response);
    expired();
    throw error;
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return response.json();
}

// ---------------------------------------------------------------- the session

/** Who the session is, or null when there is none (or it expired). */
export async function session() {
  const response = await fetchAgain('/ui/session', {headers: CONSOLE_HEADER, cache: 'no-store'});
  if (response.status === 401) return null;
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/**
 * Logs in: the server sets the session cookie. Resolves to the session (as `session()`);
 * rejects with an ApiError (401: wrong name or password; 429: too many failures). Sent again
 * when the network fails under it: at worst that makes a second session, and the first is
 * never used.
 */
export async function login(username, password) {
  const response = await fetchAgain('/ui/session', {
    method: 'POST',
    headers: {...CONSOLE_HEADER, 'Content-Type': 'application/json'},
    body: JSON.stringify({username, password}),
    cache: 'no-store',
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** Logs out: the server clears the cookie. */
export async function logout() {
  const response = await fetchAgain('/ui/session', {method: 'DELETE', headers: CONSOLE_HEADER});
  if (!response.ok) throw await errorOf(response);
}

// ---------------------------------------------------------------- resources

/** The path of a collection of `plural` in namespace `ns` (cluster-scoped when ns is empty). */
export function collection(plural, ns) {
  return ns ? `${API}/namespaces/${encodeURIComponent(ns)}/${plural}` : `${API}/${plural}`;
}

/** Every object of a collection (every page), and the resourceVersion to watch from. */
export async function list(path, {signal} = {}) {
  const items = [];
  let token = '';
  let resourceVersion = '';
  do {
    const query = token ? `?continue=${encodeURIComponent(token)}` : '';
    const page = await request('GET', path + query, undefined, {signal});
    items.push(...page.items);
    resourceVersion ||= page.metadata.resourceVersion;
    token = page.metadata.continue || '';
  } while (token);
  return {items, resourceVersion};
}

/**
 * Keeps a live copy of a collection: lists it, then follows its watch stream, reconnecting
 * from the last version seen when the stream ends or breaks (listing afresh when the version
 * has been compacted away, 410). Calls `onChange(objectsByName)` after the list and after every
 * change, and `onState('live' | 'reconnecting', error?)` as the connection comes and goes.
 * Stops when `signal` aborts. A 401 ends it (the session expired). Objects are keyed by name,
 * or by `key(object)` when given (a list across namespaces: namespace and name).
 */
export async function follow(path, {signal, onChange, onState, key = (o) => o.metadata.name}) {
  const objects = new Map();
  let resourceVersion = '';
  let backoff = 500;
  while (!signal.aborted) {
    try {
      if (!resourceVersion) {
        const listed = await list(path, {signal});
        objects.clear();
        for (const o of listed.items) objects.set(key(o), o);
        resourceVersion = listed.resourceVersion;
        onChange(objects);
      }
      const opened = Date.now();
      const outcome = await watchOnce(path, resourceVersion, signal, {
        onOpen: () => onState('live'),
        onEvent: (event) => {
          resourceVersion = event.object?.metadata?.resourceVersion || resourceVersion;
          if (event.type === 'BOOKMARK') return;
          const name = key(event.object);
          if (event.type === 'DELETED') objects.delete(name);
          else objects.set(name, event.object);
          onChange(objects);
        },
      });
      if (outcome === 'expired') return;
      if (outcome === 'gone') {
        // The version is too old: list again.
        resourceVersion = '';
        continue;
      }
      // A stream that ends as soon as it opens (a server shutting down) is not re-opened at
      // once, over and over.
      if (Date.now() - opened < 1000) {
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, 30000);
      } else {
        backoff = 500;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) return;
      onState('reconnecting', error);
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, 30000);
    }
  }
}

/**
 * One watch request from `resourceVersion`: `onOpen()` once the API answers, `onEvent(event)`
 * for each event. Resolves to 'ended' when the stream ends, 'gone' when the version is too old
 * (410, or an ERROR event) and 'expired' on a 401 (the session's listeners are told). Throws
 * when the request fails, and when the stream goes silent: the server sends a bookmark at least
 * every 10 s, so one that says nothing for SILENCE_MS is dead even if its connection does not
 * say so.
 */
async function watchOnce(path, resourceVersion, signal, {onOpen, onEvent}) {
  const query = `?watch=true&allowWatchBookmarks=true&timeoutSeconds=290&resourceVersion=${encodeURIComponent(resourceVersion)}`;
  const connection = new AbortController();
  const stop = () => connection.abort();
  signal.addEventListener('abort', stop, {once: true});
  let silent;
  const listen = () => {
    clearTimeout(silent);
    silent = setTimeout(() => connection.abort(new Error('the watch stream went silent')), SILENCE_MS);
  };
  try {
    listen();
    const response = await fetch(path + query, {headers: CONSOLE_HEADER, signal: connection.signal, cache: 'no-store'});
    if (response.status === 401) {
      await errorOf(response);
      expired();
      return 'expired';
    }
    if (response.status === 410) return 'gone';
    if (!response.ok) throw await errorOf(response);
    onOpen();
    for await (const event of lines(response.body, connection.signal)) {
      listen();
      if (event.type === 'ERROR') return 'gone';
      onEvent(event);
    }
    // Cut short by the silence: a failure, not an end.
    if (connection.signal.aborted && !signal.aborted) throw connection.signal.reason;
    return 'ended';
  } finally {
    clearTimeout(silent);
    signal.removeEventListener('abort', stop);
  }
}

/**
 * The lines of a text body as they arrive; with `partial`, also a last one without its newline
 * (a log's last words; a watch's cut-off event is not one).
 */
async function* textLines(body, signal, {partial = true} = {}) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const stop = () => reader.cancel().catch(() => {});
  signal.addEventListener('abort', stop, {once: true});
  let buffered = '';
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffered += value;
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        yield buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
      }
    }
    if (partial && buffered) yield buffered;
  } finally {
    signal.removeEventListener('abort', stop);
  }
}

/** The JSON objects of an NDJSON body, one a line, as they arrive. */
async function* lines(body, signal) {
  for await (const line of textLines(body, signal, {partial: false})) {
    if (line.trim()) yield JSON.parse(line);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, {once: true});
  });
}

// ---------------------------------------------------------------- deploy form

/**
 * The images uploaded to namespace `ns` (`{name, tag, image, digest}` each), for the deploy
 * form to offer. A server without the images API answers 404: then there are none to offer.
 */
export async function namespaceImages(ns, {signal} = {}) {
  try {
    return (await listImages(ns, {signal})).filter((i) => typeof i?.image === 'string');
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return [];
    throw error;
  }
}

// ---------------------------------------------------------------- uploaded images

/** The images uploaded to `namespace`: [{name, tag, image, digest}]. */
export async function listImages(namespace, {signal} = {}) {
  const answer = await request('GET', collection('images', namespace), undefined, {signal});
  return Array.isArray(answer?.items) ? answer.items : [];
}

/** Why an upload's connection failed: the network, not the API (which answers with a status). */
const UPLOAD_BROKEN = 'the connection to the API failed during the upload';

/**
 * Uploads `file` (a `docker save` archive) into `namespace`, optionally as `name`:`tag`.
 * XMLHttpRequest rather than fetch, for its upload progress: `onProgress(sent, total)` is
 * called as the body goes out. Resolves to {name, tag, image, digest}; rejects with an
 * ApiError (the server's message), or one of status 0 when the connection failed or
 * `signal` aborted it.
 *
 * An upload the network broke (Chromium fails every request in flight when a network
 * interface comes or goes, as Docker's do whenever a container starts) is sent again, up to
 * four tries, 250 ms, 500 ms and 1 s apart, starting the progress over: the same archive under
 * the same name and tag makes the same image, so sending it twice does no harm.
 */
export async function uploadImage(namespace, file, options = {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await uploadOnce(namespace, file, options);
    } catch (error) {
      const broken = error instanceof ApiError && error.status === 0 && error.message === UPLOAD_BROKEN;
      if (!broken || options.signal?.aborted || attempt >= 3) throw error;
      await sleep(250 * 2 ** attempt, options.signal);
    }
  }
}

function uploadOnce(namespace, file, {name = '', tag = '', onProgress = () => {}, signal} = {}) {
  const query = new URLSearchParams();
  if (name) query.set('name', name);
  if (tag) query.set('tag', tag);
  const qs = query.toString();
  const url = `${API}/namespaces/${encodeURIComponent(namespace)}/images${qs ? `?${qs}` : ''}`;
  onProgress(0, file.size);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.setRequestHeader('X-Stratus-Console', '1');
    xhr.setRequestHeader('Content-Type', 'application/x-tar');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.responseType = 'text';
    xhr.upload.addEventListener('progress', (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size));
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // Not JSON: the status line says enough.
      }
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        resolve(body);
        return;
      }
      const error = new ApiError(xhr.status, body?.message || `${xhr.status} ${xhr.statusText}`, body?.reason || '');
      if (xhr.status === 401) expired();
      reject(error);
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, UPLOAD_BROKEN)));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'the upload was cancelled')));
    signal?.addEventListener('abort', () => xhr.abort());
    xhr.send(file);
  });
}

// ---------------------------------------------------------------- text streams (the service page)

/**
 * Follows a text stream line by line as it arrives (a followed log: `…/log?follow=true`),
 * calling `onLine(line)` for each. `query(first)` gives the query string of each connection:
 * the first one, and those that pick the stream up again after the network broke it (a log
 * asks for no old lines then). `onState('live' | 'reconnecting', error?)` tells which it is.
 * Resolves when the stream ends; rejects with an ApiError when the API refuses (a 401 also
 * ends the session). Stops when `signal` aborts.
 */
export async function followLines(path, {signal, onLine, onState = () => {}, query}) {
  let backoff = 250;
  for (let first = true; ; first = false) {
    let response;
    try {
      response = await fetch(path + query(first), {headers: {...CONSOLE_HEADER, Accept: 'text/plain'}, signal, cache: 'no-store'});
    } catch (error) {
      if (signal.aborted) return;
      onState('reconnecting', error);
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, 8000);
      continue;
    }
    if (response.status === 401) {
      const error = await errorOf(response);
      expired();
      throw error;
    }
    if (!response.ok) throw await errorOf(response);
    onState('live');
    backoff = 250;
    try {
      for await (const line of textLines(response.body, signal)) onLine(line);
      return;
    } catch (error) {
      if (signal.aborted) return;
      onState('reconnecting', error);
      await sleep(backoff, signal);
    }
  }
}
