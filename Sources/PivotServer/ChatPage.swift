/// The chat page served at `/`: plain HTML and JavaScript, no build step, nothing fetched from
/// elsewhere. It streams from /v1/chat/completions and shows the model and tokens/s. The page itself
/// needs no API key; when the server answers 401 it asks for one and keeps it in localStorage.
let chatPageHTML = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pivot chat</title>
<style>
  :root { --fg: #1d2430; --muted: #6b7483; --line: #dde2ea; --user: #e8f0fe; --bot: #f6f7f9; --accent: #2f6fde; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #fff;
         display: flex; flex-direction: column; height: 100vh; }
  header { display: flex; align-items: center; gap: 12px; padding: 10px 16px; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 16px; margin: 0; }
  #model { color: var(--muted); font-size: 13px; }
  #speed { margin-left: auto; color: var(--muted); font-size: 13px; font-variant-numeric: tabular-nums; }
  #log { flex: 1; overflow-y: auto; padding: 16px; display: flex; flex-direction: column; gap: 10px; }
  .msg { max-width: 760px; padding: 8px 12px; border-radius: 10px; white-space: pre-wrap; word-wrap: break-word; }
  .user { align-self: flex-end; background: var(--user); }
  .assistant { align-self: flex-start; background: var(--bot); border: 1px solid var(--line); }
  .error { align-self: center; color: #b3261e; font-size: 13px; }
  form { display: flex; gap: 8px; padding: 12px 16px; border-top: 1px solid var(--line); }
  textarea { flex: 1; resize: none; height: 46px; overflow-y: auto; padding: 10px; font: inherit; border: 1px solid var(--line); border-radius: 8px; }
  button { padding: 0 16px; font: inherit; border-radius: 8px; border: 1px solid var(--line); background: #fff; cursor: pointer; }
  button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
  button:disabled { opacity: .5; cursor: default; }
</style>
</head>
<body>
<header><h1>Pivot</h1><span id="model">loading…</span><span id="speed"></span></header>
<div id="log"></div>
<form id="form">
  <textarea id="input" placeholder="Message (Enter to send, Shift+Enter for a new line)" autofocus></textarea>
  <button class="primary" id="send" type="submit">Send</button>
  <button id="reset" type="button">Reset</button>
</form>
<script>
const log = document.getElementById('log'), input = document.getElementById('input');
const send = document.getElementById('send'), speed = document.getElementById('speed');
let messages = [], controller = null;
let apiKey = localStorage.getItem('pivot-api-key') || '';
function headers(extra) { return apiKey ? Object.assign({ 'Authorization': 'Bearer ' + apiKey }, extra) : extra; }
function askKey() {
  apiKey = window.prompt('This server needs an API key:') || '';
  localStorage.setItem('pivot-api-key', apiKey);
}

fetch('/v1/models', { headers: headers({}) }).then(r => {
  if (r.status === 401) { askKey(); if (apiKey) location.reload(); }
  return r.json();
}).then(m => {
  const info = m.data[0];
  document.getElementById('model').textContent = info.id + ' · ctx ' + info.meta.n_ctx;
}).catch(() => { document.getElementById('model').textContent = 'model unavailable'; });

function bubble(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

async function ask(text) {
  messages.push({ role: 'user', content: text });
  bubble('user', text);
  const out = bubble('assistant', '');
  send.disabled = true;
  controller = new AbortController();
  let reply = '';
  try {
    const response = await fetch('/v1/chat/completions', {
      method: 'POST', headers: headers({ 'Content-Type': 'application/json' }), signal: controller.signal,
      body: JSON.stringify({ messages, stream: true, max_tokens: 512 })
    });
    if (response.status === 401) askKey();
    if (!response.ok) { const e = await response.json(); throw new Error(e.error ? e.error.message : response.statusText); }
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
        const chunk = JSON.parse(line.slice(6));
        const delta = chunk.choices.length ? chunk.choices[0].delta : {};
        if (delta && delta.content) { reply += delta.content; out.textContent = reply; log.scrollTop = log.scrollHeight; }
        if (chunk.timings) {
          const t = chunk.timings;
          speed.textContent = t.predicted_per_second.toFixed(1) + ' tokens/s · prompt ' + t.prompt_n + ' new, ' + t.cache_n + ' cached';
        }
      }
    }
    messages.push({ role: 'assistant', content: reply });
  } catch (e) {
    if (e.name !== 'AbortError') bubble('error', String(e.message || e));
    messages.pop();
    if (!reply) out.remove();
  } finally {
    send.disabled = false;
    controller = null;
  }
}

document.getElementById('form').addEventListener('submit', e => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || controller) return;
  input.value = '';
  ask(text);
});
input.addEventListener('keydown', e => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); document.getElementById('form').requestSubmit(); }
});
document.getElementById('reset').addEventListener('click', () => {
  if (controller) controller.abort();
  messages = []; log.innerHTML = ''; speed.textContent = '';
  input.focus();
});
</script>
</body>
</html>
"""#
