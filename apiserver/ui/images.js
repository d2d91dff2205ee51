// The images page: upload a `docker save` archive into the namespace (streamed by the browser,
// with a progress bar), and the namespace's uploaded images, ready to deploy by name.

import * as api from './api.js';
import {h, replace} from './dom.js';

/** Renders the page into `main` for `namespace`; returns a function that cancels an upload. */
export function render(main, {namespace}) {
  if (!namespace) {
    replace(main, h('h1', {}, 'Images'),
      h('p', {class: 'notice'}, 'You have no namespace to upload images to. Ask an admin of your tenant for a role in one.'));
    return () => {};
  }
  const stop = new AbortController();
  const file = h('input', {id: 'image-file', type: 'file', accept: '.tar,application/x-tar', required: true});
  const name = h('input', {id: 'image-name', type: 'text', autocomplete: 'off', placeholder: 'from the archive', pattern: '[a-z0-9]+([._\\-][a-z0-9]+)*'});
  const tag = h('input', {id: 'image-tag', type: 'text', autocomplete: 'off', placeholder: 'from the archive'});
  const submit = h('button', {type: 'submit', id: 'image-upload'}, 'Upload');
  const progress = h('progress', {id: 'image-progress', max: '1', value: '0', 'aria-label': 'Upload progress'});
  const progressText = h('span', {id: 'image-progress-text', class: 'notice'});
  const progressRow = h('div', {class: 'upload-progress'}, progress, progressText);
  progressRow.hidden = true;
  const message = h('p', {id: 'image-message', class: 'message', role: 'status', 'aria-live': 'polite'});
  message.hidden = true;
  const form = h('form', {id: 'image-form', class: 'upload-form', novalidate: true},
    h('label', {for: 'image-file'}, 'Image archive (the output of ', h('code', {}, 'docker save'), ')'), file,
    h('div', {class: 'upload-names'},
      h('label', {}, 'Name (optional)', name),
      h('label', {}, 'Tag (optional)', tag)),
    submit, progressRow, message);
  const body = h('tbody', {id: 'images-rows'});
  const table = h('table', {id: 'images', class: 'images'},
    h('caption', {}, `Images in namespace ${namespace}`),
    h('thead', {}, h('tr', {}, ['Name', 'Tag', 'Image', 'Digest'].map((c) => h('th', {scope: 'col'}, c)))),
    body);
  const empty = h('p', {id: 'images-empty', class: 'notice'}, `No images uploaded to ${namespace} yet.`);
  table.hidden = true;
  empty.hidden = true;
  replace(main,
    h('div', {class: 'page-head'}, h('h1', {}, 'Images')),
    h('p', {class: 'notice'}, 'Upload an image saved with ', h('code', {}, 'docker save -o app.tar IMAGE'),
      '; it is stored in the cluster\'s registry under this namespace, and a Service deploys it by the name shown below.'),
    form,
    h('h2', {}, 'Uploaded images'),
    h('div', {class: 'table-wrap'}, table), empty);

  const say = (text, kind) => {
    message.textContent = text;
    message.className = `message ${kind}`;
    message.hidden = !text;
  };

  async function refresh() {
    try {
      const items = await api.listImages(namespace);
      replace(body, items.map((i) => h('tr', {'data-image': i.image},
        h('th', {scope: 'row', 'data-label': 'Name'}, i.name),
        h('td', {'data-label': 'Tag'}, i.tag),
        h('td', {'data-label': 'Image'}, h('code', {}, i.image)),
        h('td', {'data-label': 'Digest'}, h('code', {class: 'digest', title: i.digest}, i.digest.slice(0, 19))))));
      table.hidden = items.length === 0;
      empty.hidden = items.length !== 0;
    } catch (error) {
      if (!stop.signal.aborted) say(`The images could not be listed: ${error.message}`, 'error');
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) {
      say('Choose a .tar archive made by docker save first.', 'error');
      file.focus();
      return;
    }
    submit.disabled = true;
    progressRow.hidden = false;
    progress.value = 0;
    say('', '');
    const mib = (b) => (b / (1024 * 1024)).toFixed(1);
    try {
      const image = await api.uploadImage(namespace, chosen, {
        name: name.value.trim(),
        tag: tag.value.trim(),
        signal: stop.signal,
        onProgress(sent, total) {
          progress.value = total ? sent / total : 0;
          progressText.textContent = sent >= total ? 'Sent; storing in the registry…' : `${mib(sent)} of ${mib(total)} MiB`;
        },
      });
      progress.value = 1;
      progressText.textContent = '';
      say(`Uploaded ${image.image} (${image.digest}).`, 'ok');
      form.reset();
      await refresh();
    } catch (error) {
      if (stop.signal.aborted) return;
      progressText.textContent = '';
      say(`The upload failed: ${error.message}`, 'error');
    } finally {
      submit.disabled = false;
    }
  });

  refresh();
  return () => stop.abort();
}
