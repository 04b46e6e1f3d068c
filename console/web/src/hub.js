// The console's one connection to the hub: the Centrifuge SDK over /connection/websocket (rpc,
// channels, the server-side user: channel) plus fetch() for the HTTP-only routes. Pages use the
// small API below; nothing here knows about React.
import { Centrifuge } from 'centrifuge';
import { HubError, decodeToken } from './token.js';

export { HubError };

// Centrifuge's numeric error codes back to the hub's v1 names, so pages show one vocabulary.
const CODES = { 100: 'internal', 101: 'unauthorized', 102: 'bad_request', 103: 'forbidden', 104: 'bad_request',
  105: 'conflict', 106: 'too_large', 107: 'bad_request', 108: 'unavailable', 109: 'unauthorized', 110: 'unauthorized',
  111: 'rate_limited', 112: 'conflict', 404: 'not_found', 409: 'conflict' };

function wrap(err) {
  if (err instanceof HubError) return err;
  if (err && typeof err.code === 'number') {
    return new HubError(CODES[err.code] || String(err.code), err.message);
  }
  return new HubError('unavailable', (err && err.message) || String(err));
}

export class Hub {
  constructor(token, { onState, onFatal } = {}) {
    this.token = token;
    this.me = decodeToken(token);
    this.listeners = new Set();
    this.onState = onState || (() => {});
    this.onFatal = onFatal || (() => {});
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    this.client = new Centrifuge(`${proto}://${location.host}/connection/websocket`, {
      token,
      // A pasted token cannot be renewed here: hand back the same one and let the hub refuse it.
      getToken: async () => this.token,
      minReconnectDelay: 200,
      maxReconnectDelay: 5000,
    });
    this.client.on('state', (ctx) => this.onState(ctx.newState));
    this.client.on('disconnected', (ctx) => {
      if (ctx.code >= 3500) this.onFatal(ctx.reason || `disconnected (${ctx.code})`);
    });
    // Server-side subscription (user:<me>) and async messages (assist deltas) both land here.
    this.client.on('publication', (ctx) => this._emit({ channel: ctx.channel, offset: ctx.offset, data: ctx.data,
      from: ctx.info ? ctx.info.user : null, tags: ctx.tags }));
    this.client.on('message', (ctx) => this._emit({ channel: null, data: ctx.data }));
  }

  connect() {
    this.client.connect();
    return this.client.ready(10000);
  }

  close() {
    this.client.disconnect();
    this.listeners.clear();
  }

  // fn({channel, data, from, offset}) for every publication on user:<me> and every async message.
  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  _emit(ev) {
    for (const fn of [...this.listeners]) {
      try { fn(ev); } catch (e) { console.warn('listener failed', e); }
    }
  }

  async rpc(method, params = {}) {
    try {
      const res = await this.client.rpc(method, params);
      return res.data;
    } catch (err) {
      throw wrap(err);
    }
  }

  // An ephemeral signal (typing, call signalling) to the channel's other subscribers: the hub's
  // `signal` command, which the Centrifuge endpoint takes as rpc("signal", {channel, data}).
  signal(channel, data) {
    return this.rpc('signal', { channel, data });
  }

  // A channel subscription: handlers {publication, join, leave, state}; returns {sub, close}.
  subscribe(channel, handlers = {}) {
    let sub = this.client.getSubscription(channel);
    if (sub) this.client.removeSubscription(sub);
    sub = this.client.newSubscription(channel, { joinLeave: true, recoverable: true, positioned: true });
    if (handlers.publication) sub.on('publication', (ctx) => handlers.publication({ offset: ctx.offset,
      data: ctx.data, from: ctx.info ? ctx.info.user : null, tags: ctx.tags }));
    if (handlers.join) sub.on('join', (ctx) => handlers.join(ctx.info.user));
    if (handlers.leave) sub.on('leave', (ctx) => handlers.leave(ctx.info.user));
    if (handlers.error) sub.on('error', (ctx) => handlers.error(wrap(ctx.error)));
    sub.subscribe();
    return {
      sub,
      ready: () => sub.ready(10000).catch((e) => { throw wrap(e); }),
      publish: (data) => sub.publish(data).catch((e) => { throw wrap(e); }),
      history: (limit = 50) => sub.history({ limit, reverse: true }).then((r) => [...r.publications].reverse()
        .map((p) => ({ offset: p.offset, data: p.data, from: p.info ? p.info.user : null }))).catch((e) => { throw wrap(e); }),
      presence: () => sub.presence().then((r) => Object.values(r.clients || {}).map((c) => c.user)).catch((e) => { throw wrap(e); }),
      close: () => { sub.unsubscribe(); this.client.removeSubscription(sub); },
    };
  }

  // The newest publications of the caller's own user: channel (offers, invites still open).
  async userHistory(limit = 50) {
    try {
      const r = await this.client.history(`user:${this.me.user}`, { limit, reverse: true });
      return [...r.publications].reverse().map((p) => ({ offset: p.offset, data: p.data }));
    } catch (err) {
      throw wrap(err);
    }
  }

  async http(path, { method = 'GET', body, text = false } = {}) {
    const headers = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (text && res.ok) return res.text();
    const raw = await res.text();
    let data = null;
    try { data = raw ? JSON.parse(raw) : null; } catch { data = null; }
    if (!res.ok) {
      const e = (data && data.error) || {};
      throw new HubError(e.code || String(res.status), e.message || res.statusText, res.status);
    }
    return data;
  }
}

