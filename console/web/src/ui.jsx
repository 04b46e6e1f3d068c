// Small shared pieces: the hub context, error text, user-channel events, timers, formatting.
import { createContext, useContext, useEffect, useRef, useState } from 'react';

export const HubContext = createContext(null);
export const useHub = () => useContext(HubContext);

export function ErrorText({ error }) {
  if (!error) return null;
  return (
    <p role="alert" className="error" data-testid="error">
      {error.code ? <code>{error.code}</code> : null} {error.message || String(error)}
    </p>
  );
}

// fn(data, ev) for each publication on user:<me> whose data.kind is one of kinds (or any kind).
export function useUserEvents(kinds, fn) {
  const hub = useHub();
  const ref = useRef(fn);
  ref.current = fn;
  const key = kinds ? kinds.join(',') : '*';
  useEffect(() => hub.listen((ev) => {
    const d = ev.data;
    if (!d || typeof d !== 'object') return;
    if (!kinds || kinds.includes(d.kind)) ref.current(d, ev);
  }), [hub, key]);
}

export function useInterval(fn, ms) {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    if (ms == null) return undefined;
    const t = setInterval(() => ref.current(), ms);
    return () => clearInterval(t);
  }, [ms]);
}

export function useNow(ms = 1000) {
  const [now, setNow] = useState(Date.now());
  useInterval(() => setNow(Date.now()), ms);
  return now;
}

// Run an async action, keeping its error for display; returns [run, busy, error, setError].
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (fn) => {
    setBusy(true);
    setError(null);
    try {
      return await fn();
    } catch (err) {
      setError(err);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return [run, busy, error, setError];
}

export const money = (amount, currency = 'GBP') => {
  if (amount == null) return '—';
  try {
    return new Intl.NumberFormat('en-GB', { style: 'currency', currency }).format(amount / 100);
  } catch {
    return `${(amount / 100).toFixed(2)} ${currency}`;
  }
};

export const time = (ms) => (ms ? new Date(ms).toLocaleTimeString('en-GB') : '');

// Per-user list remembered in localStorage (jobs and bookings this browser created: the hub has no
// list method for them).
export function useStored(name, initial) {
  const hub = useHub();
  const key = `hub-console:${hub.me.tenant}:${hub.me.user}:${name}`;
  const [value, setValue] = useState(() => {
    try { return JSON.parse(localStorage.getItem(key)) ?? initial; } catch { return initial; }
  });
  const set = (v) => setValue((old) => {
    const next = typeof v === 'function' ? v(old) : v;
    localStorage.setItem(key, JSON.stringify(next));
    return next;
  });
  return [value, set];
}

export function Field({ id, label, children, hint }) {
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {children}
      {hint ? <small className="hint">{hint}</small> : null}
    </div>
  );
}
