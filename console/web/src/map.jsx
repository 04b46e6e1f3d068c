// An SVG map in Web Mercator: zones as polygons with holes (even-odd fill), an optional H3 cell
// overlay, markers, a draft polygon for the zone editor, and raster tiles only when an operator
// configured a tile URL (nothing is fetched from another host otherwise). A click (or Enter on the
// focused map, at its centre) reports the point as {lat, lng}; arrow keys pan, + and - zoom.
import { useMemo, useRef, useState } from 'react';

const S = 1 << 20; // world units: the whole Mercator square is S x S
const toX = (lng) => ((lng + 180) / 360) * S;
const toY = (lat) => {
  const r = (Math.max(-85, Math.min(85, lat)) * Math.PI) / 180;
  return ((1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2) * S;
};
const toLng = (x) => (x / S) * 360 - 180;
const toLat = (y) => (Math.atan(Math.sinh(Math.PI * (1 - (2 * y) / S))) * 180) / Math.PI;

function polygons(geometry) {
  if (!geometry) return [];
  if (geometry.type === 'Polygon') return [geometry.coordinates];
  if (geometry.type === 'MultiPolygon') return geometry.coordinates;
  return [];
}

export function ringsPath(rings) {
  return rings.map((ring) => ring.map(([lng, lat], i) => `${i ? 'L' : 'M'}${toX(lng).toFixed(1)} ${toY(lat).toFixed(1)}`).join('') + 'Z').join('');
}

const zonePath = (geometry) => polygons(geometry).map(ringsPath).join('');

function bounds(points) {
  if (!points.length) return { x0: toX(-0.25), x1: toX(0.05), y0: toY(51.56), y1: toY(51.44) };
  let x0 = Infinity; let x1 = -Infinity; let y0 = Infinity; let y1 = -Infinity;
  for (const [lng, lat] of points) {
    const x = toX(lng); const y = toY(lat);
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  const pad = Math.max(x1 - x0, y1 - y0, 40) * 0.15;
  return { x0: x0 - pad, x1: x1 + pad, y0: y0 - pad, y1: y1 + pad };
}

function Tiles({ url, box }) {
  // Zoom so that about four tiles span the view.
  const span = Math.max(box.w, 1);
  const z = Math.max(0, Math.min(19, Math.round(Math.log2((S * 4) / span))));
  const n = 2 ** z; const size = S / n;
  const tiles = [];
  for (let tx = Math.floor(box.x / size); tx <= Math.floor((box.x + box.w) / size) && tiles.length < 64; tx++) {
    for (let ty = Math.floor(box.y / size); ty <= Math.floor((box.y + box.h) / size) && tiles.length < 64; ty++) {
      if (tx < 0 || ty < 0 || tx >= n || ty >= n) continue;
      const href = url.replace('{z}', z).replace('{x}', tx).replace('{y}', ty).replace('{s}', 'a');
      tiles.push(<image key={`${z}/${tx}/${ty}`} href={href} x={tx * size} y={ty * size} width={size} height={size} />);
    }
  }
  return <g aria-hidden="true">{tiles}</g>;
}

export function ZoneMap({ zones = [], cells = [], markers = [], draft = null, onPick, label, tileUrl, fitTo, selected }) {
  const svg = useRef(null);
  const [zoom, setZoom] = useState(1);
  const [pan, setPan] = useState([0, 0]);
  // The view frames the zones it is given (or fitTo); it changes only when that set changes.
  const source = fitTo || zones;
  const fitKey = source.map((z) => `${z.id}:${z.version}`).join(",");
  const fit = useMemo(() => {
    const pts = [];
    for (const z of source) for (const poly of polygons(z.geometry)) for (const p of poly[0] || []) pts.push(p);
    return bounds(pts);
  }, [fitKey]);
  const w = (fit.x1 - fit.x0) / zoom; const h = (fit.y1 - fit.y0) / zoom;
  const cx = (fit.x0 + fit.x1) / 2 + pan[0]; const cy = (fit.y0 + fit.y1) / 2 + pan[1];
  const box = { x: cx - w / 2, y: cy - h / 2, w, h };
  const stroke = Math.max(w, h) / 300;

  const pick = (e) => {
    if (!onPick) return;
    const pt = svg.current.createSVGPoint();
    pt.x = e.clientX; pt.y = e.clientY;
    const p = pt.matrixTransform(svg.current.getScreenCTM().inverse());
    onPick({ lat: +toLat(p.y).toFixed(6), lng: +toLng(p.x).toFixed(6) });
  };
  const key = (e) => {
    const step = Math.max(w, h) / 8;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[e.key]) { e.preventDefault(); setPan(([x, y]) => [x + moves[e.key][0], y + moves[e.key][1]]); }
    if (e.key === '+' || e.key === '=') setZoom((z) => Math.min(z * 1.5, 200));
    if (e.key === '-') setZoom((z) => Math.max(z / 1.5, 0.2));
    if (e.key === 'Enter' && onPick) onPick({ lat: +toLat(cy).toFixed(6), lng: +toLng(cx).toFixed(6) });
  };
  return (
    <div className="map-wrap">
      <svg ref={svg} data-testid="zone-map" className="map" role="application" tabIndex={0} aria-label={label || 'Map'}
        viewBox={`${box.x} ${box.y} ${box.w} ${box.h}`} preserveAspectRatio="xMidYMid meet" onClick={pick} onKeyDown={key}>
        <rect x={box.x} y={box.y} width={box.w} height={box.h} className="map-bg" />
        {tileUrl ? <Tiles url={tileUrl} box={box} /> : null}
        {zones.map((z) => (
          <path key={z.id} d={zonePath(z.geometry)} data-testid="zone-shape" data-zone={z.id} data-name={z.name}
            className={`zone ${z.active ? 'active' : 'inactive'} ${selected === z.id ? 'selected' : ''}`}
            fillRule="evenodd" strokeWidth={stroke}>
            <title>{`${z.name}: ${z.categories.join(', ')}${z.active ? '' : ' (inactive)'}`}</title>
          </path>
        ))}
        {cells.map((c) => (
          <path key={c.cell} data-testid="h3-cell" className="cell" strokeWidth={stroke / 2}
            d={ringsPath([c.boundary.map(([lat, lng]) => [lng, lat])])} />
        ))}
        {draft ? draft.map((ring, i) => (
          <g key={i} className="draft">
            <polyline points={ring.map(([lng, lat]) => `${toX(lng)},${toY(lat)}`).join(' ')} strokeWidth={stroke} />
            {ring.map(([lng, lat], j) => <circle key={j} cx={toX(lng)} cy={toY(lat)} r={stroke * 2.5} />)}
          </g>
        )) : null}
        {markers.map((m) => (
          <circle key={m.id} cx={toX(m.lng)} cy={toY(m.lat)} r={stroke * (m.kind === 'pick' ? 3 : 4)}
            className={`marker ${m.kind || ''}`} data-testid={m.kind === 'provider' ? 'provider-dot' : undefined}>
            <title>{m.label}</title>
          </circle>
        ))}
      </svg>
      <div className="map-tools" role="group" aria-label="Map zoom">
        <button type="button" onClick={() => setZoom((z) => Math.min(z * 1.5, 200))} aria-label="Zoom in">+</button>
        <button type="button" onClick={() => setZoom((z) => Math.max(z / 1.5, 0.2))} aria-label="Zoom out">−</button>
        <button type="button" onClick={() => { setZoom(1); setPan([0, 0]); }}>Fit</button>
      </div>
    </div>
  );
}
