// Admin: the zone editor (draw and edit polygons with holes, categories, active; saved through
// /api/zones, the API's errors shown as given), live hub figures from /metrics, the audit log.
import { useEffect, useRef, useState } from 'react';
import { ZoneMap } from '../map.jsx';
import { ErrorText, Field, useAction, useHub, useInterval } from '../ui.jsx';

const EMPTY = { id: null, name: '', categories: '', active: true, rings: [[]] };

function closeRing(ring) {
  if (ring.length && (ring[0][0] !== ring[ring.length - 1][0] || ring[0][1] !== ring[ring.length - 1][1])) return [...ring, ring[0]];
  return ring;
}
const openRing = (ring) => (ring.length > 1 && ring[0][0] === ring[ring.length - 1][0] && ring[0][1] === ring[ring.length - 1][1] ? ring.slice(0, -1) : ring);

function geometryOf(rings) {
  return { type: 'Polygon', coordinates: rings.filter((r) => r.length).map(closeRing) };
}

function ZoneEditor() {
  const hub = useHub();
  const [zones, setZones] = useState([]);
  const [draft, setDraft] = useState(EMPTY);
  const [text, setText] = useState('');
  const [textGeom, setTextGeom] = useState(null); // a MultiPolygon (or hand-edited) geometry from the text box
  const [run, busy, error] = useAction();
  const [notice, setNotice] = useState('');
  const [focus, setFocus] = useState(null); // the zone last opened: the map frames it until another is
  const load = () => run(async () => setZones((await hub.http('/api/zones')).zones));
  useEffect(() => { load(); }, []);
  useEffect(() => { if (!textGeom) setText(JSON.stringify(geometryOf(draft.rings))); }, [draft.rings, textGeom]);

  const pick = ({ lat, lng }) => {
    setTextGeom(null);
    setDraft((d) => {
      const rings = d.rings.map((r) => r.slice());
      rings[rings.length - 1].push([lng, lat]);
      return { ...d, rings };
    });
  };
  const edit = (z) => {
    const polys = z.geometry.type === 'Polygon' ? [z.geometry.coordinates] : z.geometry.coordinates;
    setFocus(z);
    setDraft({ id: z.id, name: z.name, categories: z.categories.join(', '), active: z.active, rings: polys[0].map(openRing) });
    setTextGeom(polys.length > 1 ? z.geometry : null);
    if (polys.length > 1) setText(JSON.stringify(z.geometry));
  };
  const save = (e) => {
    e.preventDefault();
    run(async () => {
      const body = { name: draft.name, categories: draft.categories.split(',').map((c) => c.trim()).filter(Boolean),
        geometry: textGeom || geometryOf(draft.rings), active: draft.active };
      const z = draft.id ? await hub.http(`/api/zones/${encodeURIComponent(draft.id)}`, { method: 'PUT', body })
        : await hub.http('/api/zones', { method: 'POST', body });
      setNotice(`Saved zone ${z.name} (version ${z.version})`);
      setDraft({ ...EMPTY, rings: [[]] });
      setTextGeom(null);
      await load();
    });
  };
  const remove = () => run(async () => {
    await hub.http(`/api/zones/${encodeURIComponent(draft.id)}`, { method: 'DELETE' });
    setNotice(`Deleted zone ${draft.name}`);
    setDraft({ ...EMPTY, rings: [[]] });
    await load();
  });
  const applyText = () => run(async () => {
    let g;
    try { g = JSON.parse(text); } catch { throw new Error('The geometry is not valid JSON.'); }
    if (g.type === 'Polygon') { setTextGeom(null); setDraft({ ...draft, rings: g.coordinates.map(openRing) }); } else setTextGeom(g);
  });
  const others = zones.filter((z) => z.id !== draft.id);
  return (
    <section aria-labelledby="ze-title">
      <h2 id="ze-title">Zones</h2>
      <p className="hint">Click the map to add corners to the outline; “Start a hole” begins a ring inside it. The text box holds the same GeoJSON (lng, lat) for keyboard editing.</p>
      <div className="split">
        <ZoneMap zones={others} fitTo={focus ? [focus] : zones} draft={draft.rings} onPick={pick} selected={draft.id}
          label="Zone editor map: click to add a corner" />
        <form className="card" onSubmit={save} aria-label="Zone">
          <Field id="zn-name" label="Name"><input id="zn-name" data-testid="zone-name" required value={draft.name} onChange={(e) => setDraft({ ...draft, name: e.target.value })} /></Field>
          <Field id="zn-cats" label="Categories (comma separated)"><input id="zn-cats" data-testid="zone-categories" value={draft.categories} onChange={(e) => setDraft({ ...draft, categories: e.target.value })} /></Field>
          <label className="check"><input type="checkbox" data-testid="zone-active" checked={draft.active} onChange={(e) => setDraft({ ...draft, active: e.target.checked })} /> Active</label>
          <div className="row">
            <button type="button" data-testid="zone-hole" onClick={() => setDraft({ ...draft, rings: [...draft.rings, []] })} disabled={!draft.rings[0].length}>Start a hole</button>
            <button type="button" onClick={() => setDraft((d) => ({ ...d, rings: d.rings.map((r, i) => (i === d.rings.length - 1 ? r.slice(0, -1) : r)) }))}>Undo corner</button>
            <button type="button" data-testid="zone-new" onClick={() => { setDraft({ ...EMPTY, rings: [[]] }); setTextGeom(null); }}>New zone</button>
          </div>
          <Field id="zn-geo" label="Geometry (GeoJSON)">
            <textarea id="zn-geo" data-testid="zone-geojson" rows={4} value={text} onChange={(e) => setText(e.target.value)} />
          </Field>
          <button type="button" onClick={applyText}>Use this text</button>
          <div className="row">
            <button type="submit" data-testid="zone-save" disabled={busy}>{draft.id ? 'Save changes' : 'Create zone'}</button>
            {draft.id ? <button type="button" data-testid="zone-delete" onClick={remove} disabled={busy}>Delete</button> : null}
          </div>
          <p role="status" className="hint" data-testid="zone-notice">{notice}</p>
          <ErrorText error={error} />
        </form>
      </div>
      <ul className="list">
        {zones.map((z) => (
          <li key={z.id}>
            <button type="button" className="link" data-testid="zone-edit" onClick={() => edit(z)}>{z.name}</button>
            {' '}· {z.categories.join(', ')} · {z.active ? 'active' : 'inactive'} · v{z.version}
          </li>
        ))}
      </ul>
    </section>
  );
}

function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    out[m[1] + (m[2] || '')] = (out[m[1] + (m[2] || '')] || 0) + Number(m[3]);
  }
  return out;
}

function bucketP95(prev, cur) {
  const rows = Object.keys(cur).filter((k) => k.startsWith('hub_publish_commit_seconds_bucket'))
    .map((k) => ({ le: Number((/le="([^"]+)"/.exec(k) || [])[1]), n: cur[k] - (prev[k] || 0) }))
    .filter((r) => !Number.isNaN(r.le) || true).sort((a, b) => a.le - b.le);
  const total = rows.length ? rows[rows.length - 1].n : 0;
  if (!total) return null;
  const want = total * 0.95;
  const hit = rows.find((r) => r.n >= want);
  return hit ? hit.le : null;
}

function Figures() {
  const hub = useHub();
  const [fig, setFig] = useState(null);
  const [error, setError] = useState(null);
  const prev = useRef(null);
  const poll = async () => {
    try {
      const m = parseMetrics(await hub.http('/metrics', { text: true }));
      const t = Date.now();
      const p = prev.current;
      const next = { sockets: m.hub_open_sockets ?? 0, published: m.hub_publications_total ?? 0 };
      if (p) {
        const dt = (t - p.t) / 1000;
        next.deliveriesPerS = ((m.hub_deliveries_total ?? 0) - (p.m.hub_deliveries_total ?? 0)) / dt;
        const dn = (m.hub_publish_commit_seconds_count ?? 0) - (p.m.hub_publish_commit_seconds_count ?? 0);
        const ds = (m.hub_publish_commit_seconds_sum ?? 0) - (p.m.hub_publish_commit_seconds_sum ?? 0);
        next.commitMeanMs = dn > 0 ? (ds / dn) * 1000 : null;
        const p95 = bucketP95(p.m, m);
        next.commitP95Ms = p95 == null ? null : p95 * 1000;
      }
      prev.current = { t, m };
      setFig(next);
      setError(null);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => { poll(); }, []);
  useInterval(poll, 2000);
  const f = (v, d = 1) => (v == null ? '—' : v.toFixed(d));
  return (
    <section aria-labelledby="fig-title">
      <h2 id="fig-title">Hub figures <small>(this process, every 2 s)</small></h2>
      <dl className="figures" data-testid="hub-figures">
        <div><dt>Open sockets</dt><dd data-testid="metric-sockets">{fig ? fig.sockets : '—'}</dd></div>
        <div><dt>Deliveries/s</dt><dd data-testid="metric-deliveries">{fig ? f(fig.deliveriesPerS) : '—'}</dd></div>
        <div><dt>Commit latency, mean</dt><dd data-testid="metric-commit">{fig ? `${f(fig.commitMeanMs, 2)} ms` : '—'}</dd></div>
        <div><dt>Commit latency, p95 (bucket)</dt><dd>{fig ? `≤ ${f(fig.commitP95Ms, 1)} ms` : '—'}</dd></div>
        <div><dt>Publications committed</dt><dd>{fig ? fig.published : '—'}</dd></div>
      </dl>
      <ErrorText error={error} />
    </section>
  );
}

function Audit() {
  const hub = useHub();
  const [rows, setRows] = useState([]);
  const [run, , error] = useAction();
  const load = () => run(async () => setRows((await hub.http('/console/api/audit?limit=50')).rows));
  useEffect(() => { load(); }, []);
  useInterval(load, 5000);
  return (
    <section aria-labelledby="audit-title">
      <h2 id="audit-title">Audit log <button type="button" className="link" onClick={load}>Refresh</button></h2>
      <div className="table-wrap">
        <table data-testid="audit-table">
          <thead><tr><th scope="col">When</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Detail</th></tr></thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.id} data-testid="audit-row">
                <td>{new Date(r.at_ms).toLocaleTimeString('en-GB')}</td><td>{r.actor} <small>{r.role}</small></td>
                <td>{r.action}</td><td>{r.target}</td><td><code>{JSON.stringify(r.detail)}</code></td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <ErrorText error={error} />
    </section>
  );
}

export default function Admin() {
  const hub = useHub();
  if (hub.me.role !== 'admin') {
    return <div className="page"><h1>Admin</h1><p>This page is for admins; you are signed in as {hub.me.role}.</p></div>;
  }
  return (
    <div className="page admin">
      <h1>Admin</h1>
      <ZoneEditor />
      <Figures />
      <Audit />
    </div>
  );
}
