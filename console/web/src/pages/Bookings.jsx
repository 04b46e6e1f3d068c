// Customer bookings: on-demand and scheduled bookings with a crew size and their live status
// (offering, assigned, unfilled), and custom jobs (create, bids arriving live, questions,
// comments, accepting a bid, following the job to completion).
import { useEffect, useState } from 'react';
import { JobView } from '../jobs.jsx';
import { ErrorText, Field, useAction, useHub, useStored, useUserEvents } from '../ui.jsx';

function useCategories() {
  const hub = useHub();
  const [cats, setCats] = useState([]);
  useEffect(() => {
    hub.http('/console/api/coverage').then((d) => setCats([...new Set(d.zones.flatMap((z) => z.categories))].sort()))
      .catch(() => {});
  }, [hub]);
  return cats;
}

function BookingItem({ id, live }) {
  const hub = useHub();
  const [b, setB] = useState(null);
  const [load, , error] = useAction();
  useEffect(() => { load(async () => setB(await hub.rpc('bookings.get', { booking: id }))); }, [id, live]);
  if (!b) return <li>{id}…<ErrorText error={error} /></li>;
  return (
    <li data-testid="booking-item" data-booking={id}>
      {b.category} · {b.mode === 'scheduled' ? `at ${new Date(b.at_ms).toLocaleString('en-GB')}` : 'now'} · crew {b.crew}
      {' '}· <strong data-testid="booking-status" data-status={b.status}>{b.status}</strong>
      {b.providers && b.providers.length ? ` · ${b.providers.join(', ')}` : ''}
    </li>
  );
}

export default function Bookings() {
  const hub = useHub();
  const cats = useCategories();
  const [bookings, setBookings] = useStored('bookings', []);
  const [jobs, setJobs] = useStored('jobs', []);
  const [tick, setTick] = useState(0);
  const [b, setB] = useState({ category: '', lat: '51.5074', lng: '-0.1278', mode: 'on_demand', at: '', crew: '1' });
  const [j, setJ] = useState({ title: '', description: '', category: '', lat: '51.5074', lng: '-0.1278', budget: '' });
  const [runB, busyB, errB] = useAction();
  const [runJ, busyJ, errJ] = useAction();
  const [notice, setNotice] = useState('');
  useUserEvents(['booking.assigned', 'booking.unfilled'], (d) => {
    setTick((t) => t + 1);
    setNotice(`Booking ${d.booking}: ${d.kind === 'booking.assigned' ? 'assigned' : 'unfilled'}`);
  });
  useUserEvents(['bid.placed'], (d) => setNotice(`New bid on ${d.job} from ${d.provider}`));

  const book = (e) => {
    e.preventDefault();
    runB(async () => {
      const params = { category: b.category || cats[0], lat: +b.lat, lng: +b.lng, mode: b.mode, crew: +b.crew };
      if (b.mode === 'scheduled') params.at = new Date(b.at).toISOString();
      const res = await hub.rpc('bookings.create', params);
      setBookings((old) => [res.booking, ...old].slice(0, 50));
      setNotice(`Booking ${res.booking}: ${res.status}, ${res.offered} offered`);
    });
  };
  const createJob = (e) => {
    e.preventDefault();
    runJ(async () => {
      const params = { title: j.title, description: j.description, category: j.category || cats[0], lat: +j.lat, lng: +j.lng };
      if (j.budget) { params.budget = Math.round(+j.budget * 100); params.currency = 'GBP'; }
      const res = await hub.rpc('jobs.create', params);
      setJobs((old) => [res.job, ...old].slice(0, 50));
      setNotice(`Job created: ${res.notified} providers told${res.reason ? ` (${res.reason.replace(/_/g, ' ')})` : ''}`);
      setJ({ ...j, title: '', description: '', budget: '' });
    });
  };
  const catSelect = (id, value, set) => (
    <select id={id} value={value} onChange={(e) => set(e.target.value)}>
      {cats.map((c) => <option key={c}>{c}</option>)}
    </select>
  );
  return (
    <div className="page bookings">
      <h1>Bookings</h1>
      <p role="status" className="hint" data-testid="notice">{notice}</p>
      <div className="columns">
        <section aria-labelledby="bk-title">
          <h2 id="bk-title">Book a service</h2>
          <form className="card" onSubmit={book}>
            <Field id="bk-cat" label="Category">{catSelect('bk-cat', b.category, (v) => setB({ ...b, category: v }))}</Field>
            <div className="row">
              <Field id="bk-lat" label="Latitude"><input id="bk-lat" data-testid="booking-lat" inputMode="decimal" value={b.lat} onChange={(e) => setB({ ...b, lat: e.target.value })} /></Field>
              <Field id="bk-lng" label="Longitude"><input id="bk-lng" data-testid="booking-lng" inputMode="decimal" value={b.lng} onChange={(e) => setB({ ...b, lng: e.target.value })} /></Field>
            </div>
            <fieldset>
              <legend>When</legend>
              <label className="check"><input type="radio" name="mode" checked={b.mode === 'on_demand'} onChange={() => setB({ ...b, mode: 'on_demand' })} /> Now</label>
              <label className="check"><input type="radio" name="mode" data-testid="booking-scheduled" checked={b.mode === 'scheduled'} onChange={() => setB({ ...b, mode: 'scheduled' })} /> Scheduled</label>
              {b.mode === 'scheduled' ? <Field id="bk-at" label="Date and time"><input id="bk-at" type="datetime-local" required value={b.at} onChange={(e) => setB({ ...b, at: e.target.value })} /></Field> : null}
            </fieldset>
            <Field id="bk-crew" label="Crew size"><input id="bk-crew" type="number" min="1" max="20" value={b.crew} onChange={(e) => setB({ ...b, crew: e.target.value })} /></Field>
            <button type="submit" data-testid="booking-create" disabled={busyB}>Book</button>
            <ErrorText error={errB} />
          </form>
          <h2>Your bookings</h2>
          <ul className="list">{bookings.map((id) => <BookingItem key={id} id={id} live={tick} />)}</ul>
        </section>
        <section aria-labelledby="job-title">
          <h2 id="job-title">Post a custom job</h2>
          <form className="card" onSubmit={createJob}>
            <Field id="job-t" label="Title"><input id="job-t" data-testid="job-title" required maxLength={200} value={j.title} onChange={(e) => setJ({ ...j, title: e.target.value })} /></Field>
            <Field id="job-d" label="Description"><textarea id="job-d" data-testid="job-description" rows={3} value={j.description} onChange={(e) => setJ({ ...j, description: e.target.value })} /></Field>
            <Field id="job-c" label="Category">{catSelect('job-c', j.category, (v) => setJ({ ...j, category: v }))}</Field>
            <div className="row">
              <Field id="job-lat" label="Latitude"><input id="job-lat" data-testid="job-lat" inputMode="decimal" value={j.lat} onChange={(e) => setJ({ ...j, lat: e.target.value })} /></Field>
              <Field id="job-lng" label="Longitude"><input id="job-lng" data-testid="job-lng" inputMode="decimal" value={j.lng} onChange={(e) => setJ({ ...j, lng: e.target.value })} /></Field>
            </div>
            <Field id="job-b" label="Budget (GBP, optional)"><input id="job-b" data-testid="job-budget" inputMode="decimal" value={j.budget} onChange={(e) => setJ({ ...j, budget: e.target.value })} /></Field>
            <button type="submit" data-testid="job-create" disabled={busyJ}>Post the job</button>
            <ErrorText error={errJ} />
          </form>
          <h2>Your jobs</h2>
          {jobs.map((id) => <JobView key={id} job={id} />)}
        </section>
      </div>
    </div>
  );
}
