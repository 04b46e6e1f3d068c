// Explorer: the zones on a map (with holes, categories, active or not), the H3 cells covering them
// as an overlay, a category filter, match.find at a clicked point, and for admins the available
// providers moving live.
import { useEffect, useMemo, useState } from 'react';
import { ZoneMap } from '../map.jsx';
import { ErrorText, Field, useAction, useHub, useInterval } from '../ui.jsx';

const config = (() => {
  try { return JSON.parse(document.getElementById('console-config').textContent); } catch { return {}; }
})();

export default function Explorer() {
  const hub = useHub();
  const admin = hub.me.role === 'admin';
  const [zones, setZones] = useState([]);
  const [coverage, setCoverage] = useState(null);
  const [showCells, setShowCells] = useState(false);
  const [category, setCategory] = useState('');
  const [point, setPoint] = useState(null);
  const [result, setResult] = useState(null);
  const [providers, setProviders] = useState([]);
  const [load, , loadError] = useAction();
  const [find, finding, findError] = useAction();

  const refresh = () => load(async () => {
    const data = await hub.http('/console/api/coverage?cells=1');
    setZones(data.zones);
    setCoverage(data.coverage);
  });
  useEffect(() => { refresh(); }, []);
  useInterval(refresh, 15000);
  useInterval(() => {
    if (!admin) return;
    hub.http(`/console/api/providers${category ? `?category=${encodeURIComponent(category)}` : ''}`)
      .then((d) => setProviders(d.providers)).catch(() => {});
  }, admin ? 2000 : null);

  const categories = useMemo(() => [...new Set(zones.flatMap((z) => z.categories))].sort(), [zones]);
  const shown = category ? zones.filter((z) => z.categories.includes(category)) : zones;
  const shownIds = new Set(shown.map((z) => z.id));
  const cells = showCells && coverage ? coverage.cells.filter((c) => shownIds.has(c.zone)) : [];

  const search = (p) => find(async () => {
    setPoint(p);
    const cat = category || categories[0];
    if (!cat) throw new Error('There is no category to search: no zone serves any.');
    const res = await hub.rpc('match.find', { lat: p.lat, lng: p.lng, category: cat, k: 10 });
    setResult({ ...res, category: cat });
  });
  const [lat, setLat] = useState('');
  const [lng, setLng] = useState('');

  const markers = [
    ...(point ? [{ id: 'pick', lat: point.lat, lng: point.lng, kind: 'pick', label: 'Searched point' }] : []),
    ...providers.map((p) => ({ id: `p-${p.user}`, lat: p.lat, lng: p.lng, kind: 'provider', label: `${p.user} (${p.categories.join(', ')})` })),
  ];
  return (
    <div className="page explorer">
      <h1>Explorer</h1>
      <div className="toolbar">
        <Field id="cat-filter" label="Category">
          <select id="cat-filter" data-testid="category-filter" value={category} onChange={(e) => setCategory(e.target.value)}>
            <option value="">All categories</option>
            {categories.map((c) => <option key={c}>{c}</option>)}
          </select>
        </Field>
        <label className="check">
          <input type="checkbox" data-testid="h3-toggle" checked={showCells} onChange={(e) => setShowCells(e.target.checked)} />
          H3 coverage{coverage && coverage.res != null ? ` (resolution ${coverage.res})` : ''}
        </label>
        <button type="button" onClick={refresh}>Reload zones</button>
      </div>
      <ErrorText error={loadError} />
      <div className="split">
        <ZoneMap zones={shown} cells={cells} markers={markers} onPick={search} tileUrl={config.tile_url}
          label="Zones map: click a point (or press Enter for the centre) to find providers there" />
        <aside>
          <form className="card" onSubmit={(e) => { e.preventDefault(); search({ lat: +lat, lng: +lng }); }}>
            <h2>Find providers at a point</h2>
            <div className="row">
              <Field id="find-lat" label="Latitude"><input id="find-lat" inputMode="decimal" value={lat} onChange={(e) => setLat(e.target.value)} /></Field>
              <Field id="find-lng" label="Longitude"><input id="find-lng" inputMode="decimal" value={lng} onChange={(e) => setLng(e.target.value)} /></Field>
            </div>
            <button type="submit" disabled={finding}>Find</button>
          </form>
          <ErrorText error={findError} />
          {result ? (
            <section aria-live="polite" data-testid="match-answer">
              <h2>{result.category} at {point.lat.toFixed(4)}, {point.lng.toFixed(4)}</h2>
              <p>Zone: <strong data-testid="match-zone" data-zone={result.zone || ''}>{result.zone ? ((zones.find((z) => z.id === result.zone) || {}).name || result.zone) : 'none'}</strong>{result.reason ? ` · ${result.reason.replace(/_/g, ' ')}` : ''}</p>
              <ol className="list">
                {result.providers.map((p) => (
                  <li key={p.user} data-testid="match-result">{p.user} · {p.distance_m} m · score {p.score.toFixed ? p.score.toFixed(3) : p.score}</li>
                ))}
              </ol>
            </section>
          ) : <p className="hint">Click the map to run match.find there.</p>}
          <h2>Zones</h2>
          <ul className="list">
            {shown.map((z) => (
              <li key={z.id}>{z.name} · {z.categories.join(', ')} · {z.active ? 'active' : 'inactive'}</li>
            ))}
          </ul>
          {admin ? <p className="hint" data-testid="provider-count">{providers.length} available providers shown live.</p> : null}
        </aside>
      </div>
    </div>
  );
}
