// The console's shell: sign-in, the connection, navigation (hash routes) and the call panel that
// follows the user across pages. Each page is its own chunk, loaded when first opened.
import { StrictMode, Suspense, lazy, useCallback, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { decodeToken, devToken } from './token.js';
import { HubContext, ErrorText } from './ui.jsx';
import { CallPanel } from './call.jsx';
import './style.css';

const PAGES = {
  explorer: { label: 'Explorer', load: lazy(() => import('./pages/Explorer.jsx')) },
  chat: { label: 'Chat', load: lazy(() => import('./pages/Chat.jsx')) },
  bookings: { label: 'Bookings', load: lazy(() => import('./pages/Bookings.jsx')) },
  provider: { label: 'Provider', load: lazy(() => import('./pages/Provider.jsx')) },
  admin: { label: 'Admin', load: lazy(() => import('./pages/Admin.jsx')) },
};

const config = (() => {
  try { return JSON.parse(document.getElementById('console-config').textContent); } catch { return {}; }
})();

function pageFromHash() {
  const name = location.hash.replace(/^#\/?/, '').split('/')[0];
  return PAGES[name] ? name : 'explorer';
}

function Login({ onToken }) {
  const [token, setToken] = useState('');
  const [user, setUser] = useState('dev-customer');
  const [role, setRole] = useState('customer');
  const [tenant, setTenant] = useState('default');
  const [error, setError] = useState(null);
  const submit = (e) => {
    e.preventDefault();
    const t = token.trim();
    if (!decodeToken(t)) { setError({ message: 'That is not a hub token (a JWT with sub and role).' }); return; }
    onToken(t);
  };
  const dev = async (e) => {
    e.preventDefault();
    setError(null);
    try { onToken(await devToken(user.trim(), role, tenant.trim())); } catch (err) { setError(err); }
  };
  return (
    <main className="login" aria-labelledby="login-title">
      <h1 id="login-title">Hub console</h1>
      <form onSubmit={submit} className="card">
        <label htmlFor="login-token">Token</label>
        <textarea id="login-token" data-testid="login-token" rows={4} value={token}
          onChange={(e) => setToken(e.target.value)} placeholder="Paste a hub token (JWT)" />
        <button type="submit" data-testid="login-submit">Sign in</button>
      </form>
      {config.dev_sign_in ? (
        <form onSubmit={dev} className="card" aria-labelledby="dev-title">
          <h2 id="dev-title">Development sign-in</h2>
          <p className="hint">This hub runs in development on a loopback address, so it mints a token for any user and role.</p>
          <label htmlFor="dev-user">User id</label>
          <input id="dev-user" data-testid="dev-user" value={user} onChange={(e) => setUser(e.target.value)} />
          <label htmlFor="dev-role">Role</label>
          <select id="dev-role" data-testid="dev-role" value={role} onChange={(e) => setRole(e.target.value)}>
            {['customer', 'provider', 'serviceman', 'enterprise', 'admin'].map((r) => <option key={r}>{r}</option>)}
          </select>
          <label htmlFor="dev-tenant">Tenant</label>
          <input id="dev-tenant" value={tenant} onChange={(e) => setTenant(e.target.value)} />
          <button type="submit" data-testid="dev-submit">Get a development token</button>
        </form>
      ) : null}
      <ErrorText error={error} />
    </main>
  );
}

function Shell({ token, onSignOut }) {
  const [page, setPage] = useState(pageFromHash);
  const [state, setState] = useState('connecting');
  const [fatal, setFatal] = useState(null);
  const [hub, setHub] = useState(null);
  // The SDK is its own chunk: the sign-in page does not wait for it.
  useEffect(() => {
    let h = null;
    let gone = false;
    import('./hub.js').then(({ Hub }) => {
      if (gone) return;
      h = new Hub(token, { onState: (s) => {
        if (s === 'connected' && !performance.getEntriesByName('console-connected').length) performance.mark('console-connected');
        setState(s);
      }, onFatal: setFatal });
      h.connect().catch(() => {});
      setHub(h);
    }).catch((e) => setFatal(String(e)));
    return () => { gone = true; if (h) h.close(); };
  }, [token]);
  useEffect(() => {
    const on = () => setPage(pageFromHash());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  const me = decodeToken(token);
  const Page = PAGES[page].load;
  return (
    <HubContext.Provider value={hub}>
      <header className="top">
        <span className="brand">Hub console</span>
        <nav aria-label="Pages">
          {Object.entries(PAGES).map(([name, p]) => (
            <a key={name} href={`#/${name}`} data-testid={`nav-${name}`}
              aria-current={page === name ? 'page' : undefined}>{p.label}</a>
          ))}
        </nav>
        <span className="who" data-testid="who">
          {me.user} · {me.role} · <span data-testid="conn-state" className={`conn ${state}`}>{state}</span>
        </span>
        <button type="button" className="link" onClick={onSignOut}>Sign out</button>
      </header>
      {fatal ? <p role="alert" className="error">The hub closed the connection: {fatal}. Sign in again.</p> : null}
      {hub ? <CallPanel /> : null}
      <main id="page" aria-label={PAGES[page].label}>
        {hub ? (
          <Suspense fallback={<p>Loading…</p>}>
            <Page />
          </Suspense>
        ) : <p>Connecting…</p>}
      </main>
    </HubContext.Provider>
  );
}

function App() {
  const [token, setToken] = useState(() => sessionStorage.getItem('hub-token') || '');
  const onToken = useCallback((t) => { sessionStorage.setItem('hub-token', t); setToken(t); }, []);
  const signOut = useCallback(() => { sessionStorage.removeItem('hub-token'); setToken(''); }, []);
  // For the browser test's time-to-interactive figure: the first screen has rendered and listens.
  useEffect(() => { performance.mark('console-interactive'); }, []);
  if (!token || !decodeToken(token)) return <Login onToken={onToken} />;
  return <Shell key={token} token={token} onSignOut={signOut} />;
}

createRoot(document.getElementById('root')).render(<StrictMode><App /></StrictMode>);
