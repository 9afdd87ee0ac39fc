// Keys (admin keys only): the project's stored API keys, create one (its secret is shown once)
// and revoke one after typing its id.
import { api } from '../api.js';
import { errorBox, fmt, h, table } from '../ui.js';
import { confirmTyped } from './users.js';

const SCOPES = ['ingest', 'read', 'admin'];

export async function render(view, { admin }) {
  view.append(h('h1', {}, 'API keys'));
  if (!admin) {
    view.append(h('p', { class: 'notice' }, 'Managing keys needs a key with the admin scope.'));
    return;
  }
  const list = h('div', { id: 'key-list' });
  const created = h('div', { id: 'key-created', role: 'status' });
  const name = h('input', { id: 'key-name', maxlength: 200, autocomplete: 'off' });
  const boxes = SCOPES.map((s) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: s, checked: s === 'read', 'data-scope': s }), s));
  const form = h('form', { class: 'card', 'aria-label': 'Create a key' }, h('h2', {}, 'New key'),
    h('div', { class: 'row' }, h('label', {}, 'Name', name), h('fieldset', { class: 'row' }, h('legend', {}, 'Scopes'), boxes),
      h('button', { type: 'submit', id: 'key-create', 'data-admin-action': 'create-key' }, 'Create key')), created);
  view.append(h('p', { class: 'muted' }, 'Keys from the API_KEYS setting live in the environment and are not listed here.'), form, list);

  const refresh = async () => {
    const { keys } = await api('/api/v1/keys');
    list.replaceChildren(h('section', { class: 'card' }, h('h2', {}, `Keys of this project (${keys.length})`),
      keys.length ? h('div', { class: 'table-wrap' }, table([
        { key: 'key_id', label: 'Id' }, { key: 'name', label: 'Name' }, { key: 'scopes', label: 'Scopes', format: (v) => v.join(', ') },
        { key: 'created_at', label: 'Created', format: fmt.time }, { key: 'revoked_at', label: 'Revoked', format: (v) => (v ? fmt.time(v) : '') },
        {
          key: 'key_id', label: 'Action',
          format: (v, row) => (row.revoked_at ? '' : h('button', {
            type: 'button', class: 'danger', 'data-admin-action': 'revoke-key', 'data-key-id': v,
            onclick: async () => {
              if (!(await confirmTyped({ title: 'Revoke key', text: `Requests with ${v} will be refused within a second.`, expected: v }))) return;
              try {
                await api(`/api/v1/keys/${encodeURIComponent(v)}`, { method: 'DELETE' });
                await refresh();
              } catch (err) {
                list.prepend(errorBox(err));
              }
            },
          }, 'Revoke…')),
        },
      ], keys)) : h('p', { class: 'muted' }, 'No stored keys yet.')));
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const scopes = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
    try {
      const key = await api('/api/v1/keys', { method: 'POST', body: { name: name.value, scopes } });
      created.replaceChildren(h('p', { class: 'notice' }, 'Copy the key now: it is not shown again. ',
        h('code', { id: 'key-secret' }, key.key), ` (${key.key_id}, ${key.scopes.join(', ')})`));
      name.value = '';
      await refresh();
    } catch (err) {
      created.replaceChildren(errorBox(err));
    }
  });
  await refresh();
}
