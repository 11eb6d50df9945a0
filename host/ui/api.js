// The dashboard's only way to the host: the HTTP API with the signed-in
// key, and its SSE endpoints read through fetch (EventSource cannot send
// the key).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async request(method, path, body) {
    const headers = { 'X-API-KEY': this.key };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, 'unreachable', `the host did not answer (${e.message}); is cairn serve running?`);
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    if (!response.ok) {
      const error = json && json.error ? json.error : {};
      throw new ApiError(response.status, error.code || 'http_' + response.status, error.message || `${method} ${path}: ${response.status}`);
    }
    return json;
  }

  get(path) {
    return this.request('GET', path);
  }

  post(path, body) {
    return this.request('POST', path, body);
  }

  // The value, or `fallback` when the host answers 404.
  async getOr(path, fallback) {
    try {
      return await this.get(path);
    } catch (e) {
      if (e.status === 404) return fallback;
      throw e;
    }
  }

  // Every item of a paged list (limit/offset), up to `max`.
  async all(path, field, max = 10000) {
    const items = [];
    const sep = path.includes('?') ? '&' : '?';
    for (let offset = 0; offset < max; offset += 1000) {
      const page = (await this.get(`${path}${sep}limit=1000&offset=${offset}`))[field] || [];
      items.push(...page);
      if (page.length < 1000) break;
    }
    return items;
  }

  // Follows an SSE endpoint until `signal` aborts: `onEvent({id, event,
  // data})` per event, resuming after the last id when the connection
  // drops. `onState(true|false)` says whether it is connected.
  async follow(path, onEvent, signal, onState = () => {}) {
    let last = null;
    while (!signal.aborted) {
      try {
        const headers = { 'X-API-KEY': this.key, Accept: 'text/event-stream' };
        if (last !== null) headers['Last-Event-ID'] = last;
        const response = await fetch(path, { headers, signal });
        if (!response.ok || !response.body) throw new Error(`${response.status}`);
        onState(true);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
            const event = parseEvent(block);
            if (event) {
              if (event.id !== null) last = event.id;
              onEvent(event);
            }
          }
        }
      } catch (e) {
        if (signal.aborted) return;
      }
      onState(false);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

function parseEvent(block) {
  let id = null;
  let event = 'message';
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') id = value;
    else if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  let parsed;
  try {
    parsed = JSON.parse(data.join('\n'));
  } catch {
    parsed = data.join('\n');
  }
  return { id, event, data: parsed };
}
