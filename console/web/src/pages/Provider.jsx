// Provider: availability and location (providers.update), the offer inbox with a countdown and
// accept/decline, the job feed (job.new) with a bid form and questions, and their own bids.
import { useEffect, useState } from 'react';
import { JobView } from '../jobs.jsx';
import { ErrorText, Field, money, useAction, useHub, useNow, useStored, useUserEvents } from '../ui.jsx';

function OfferItem({ offer, onDone }) {
  const hub = useHub();
  const now = useNow(500);
  const [run, busy, error] = useAction();
  const left = Math.max(0, Math.round((offer.expires_at_ms - now) / 1000));
  const open = offer.state === 'open' && left > 0;
  const answer = (method, state) => run(async () => {
    const res = await hub.rpc(method, { booking: offer.booking });
    onDone(offer.booking, state, res);
  });
  return (
    <li data-testid="offer-item" data-booking={offer.booking} data-state={open ? 'open' : offer.state === 'open' ? 'expired' : offer.state}>
      <strong>{offer.category}</strong> · {offer.mode === 'scheduled' ? `at ${new Date(offer.at_ms).toLocaleString('en-GB')}` : 'now'}
      {' '}· {offer.distance_m} m away · crew {offer.crew}
      {' '}· {open ? <span data-testid="offer-countdown" aria-label={`${left} seconds left`}>{left} s left</span> : <span>{offer.state === 'open' ? 'expired' : offer.state}</span>}
      {open ? (
        <span className="row inline">
          <button type="button" data-testid="offer-accept" disabled={busy} onClick={() => answer('offers.accept', 'accepted')}>Accept</button>
          <button type="button" data-testid="offer-decline" disabled={busy} onClick={() => answer('offers.decline', 'declined')}>Decline</button>
        </span>
      ) : null}
      <ErrorText error={error} />
    </li>
  );
}

function FeedItem({ job, onBid }) {
  const hub = useHub();
  const [amount, setAmount] = useState('');
  const [note, setNote] = useState('');
  const [question, setQuestion] = useState('');
  const [run, busy, error] = useAction();
  const bid = (e) => {
    e.preventDefault();
    run(async () => {
      const res = await hub.rpc('jobs.bid', { job: job.job, amount: Math.round(+amount * 100), currency: job.currency || 'GBP', ...(note ? { note } : {}) });
      onBid(job.job, res.bid);
    });
  };
  const ask = (e) => {
    e.preventDefault();
    run(async () => { await hub.rpc('jobs.ask', { job: job.job, text: question }); setQuestion(''); });
  };
  return (
    <li className="card" data-testid="feed-item" data-job={job.job}>
      <h3>{job.title} <small>{job.category}</small></h3>
      <p className="hint">Budget {money(job.budget, job.currency)} · near {job.lat.toFixed(3)}, {job.lng.toFixed(3)}</p>
      <form className="row" onSubmit={bid}>
        <Field id={`amt-${job.job}`} label="Your price (GBP)"><input id={`amt-${job.job}`} data-testid="bid-amount" inputMode="decimal" required value={amount} onChange={(e) => setAmount(e.target.value)} /></Field>
        <Field id={`note-${job.job}`} label="Note"><input id={`note-${job.job}`} data-testid="bid-note" value={note} onChange={(e) => setNote(e.target.value)} /></Field>
        <button type="submit" data-testid="job-bid" disabled={busy}>Bid</button>
      </form>
      <form className="row" onSubmit={ask}>
        <Field id={`q-${job.job}`} label="Ask the customer"><input id={`q-${job.job}`} data-testid="ask-input" required value={question} onChange={(e) => setQuestion(e.target.value)} /></Field>
        <button type="submit" data-testid="ask-send" disabled={busy}>Ask</button>
      </form>
      <ErrorText error={error} />
    </li>
  );
}

export default function Provider() {
  const hub = useHub();
  const [me, setMe] = useStored('provider', { lat: '51.5074', lng: '-0.1278', categories: 'plumbing', available: false });
  const [offers, setOffers] = useState([]);
  const [feed, setFeed] = useState([]);
  const [myJobs, setMyJobs] = useStored('bid-jobs', []);
  const [notice, setNotice] = useState('');
  const [run, busy, error] = useAction();

  const addOffer = (d) => setOffers((old) => (old.some((o) => o.booking === d.booking) ? old : [{ ...d, state: 'open' }, ...old]));
  const setOffer = (booking, state) => setOffers((old) => old.map((o) => (o.booking === booking ? { ...o, state } : o)));
  const addJob = (d) => setFeed((old) => (old.some((x) => x.job === d.job) ? old : [d, ...old]));
  useEffect(() => {
    // What arrived while this page was closed: open offers and recent job announcements.
    hub.userHistory(100).then((pubs) => {
      const done = new Set();
      for (const { data } of [...pubs].reverse()) {
        if (!data) continue;
        if (['offer.withdrawn', 'offer.expired', 'booking.assigned'].includes(data.kind)) done.add(data.booking);
        if (data.kind === 'offer' && !done.has(data.booking) && data.expires_at_ms > Date.now()) addOffer(data);
        if (data.kind === 'job.new') addJob(data);
      }
    }).catch(() => {});
  }, [hub]);
  useUserEvents(['offer', 'offer.withdrawn', 'offer.expired', 'booking.assigned', 'job.new', 'bid.accepted', 'bid.rejected'], (d) => {
    if (d.kind === 'offer') addOffer(d);
    if (d.kind === 'offer.withdrawn') setOffer(d.booking, 'withdrawn');
    if (d.kind === 'offer.expired') setOffer(d.booking, 'expired');
    if (d.kind === 'booking.assigned') { setOffer(d.booking, 'assigned'); setNotice(`Booking ${d.booking} assigned: ${d.category} at ${d.lat}, ${d.lng}`); }
    if (d.kind === 'job.new') addJob(d);
    if (d.kind === 'bid.accepted') setNotice(`Your bid on “${d.title}” was accepted`);
    if (d.kind === 'bid.rejected') setNotice(`Your bid on “${d.title}” was not chosen`);
  });

  // The toggle moves at once and moves back if the hub refuses.
  const update = (available) => run(async () => {
    const before = me.available;
    setMe((m) => ({ ...m, available }));
    const cats = me.categories.split(',').map((c) => c.trim()).filter(Boolean);
    try {
      const res = await hub.rpc('providers.update', { lat: +me.lat, lng: +me.lng, available, categories: cats });
      setNotice(`${available ? 'Available' : 'Not available'} in cell ${res.cell}`);
    } catch (err) {
      setMe((m) => ({ ...m, available: before }));
      throw err;
    }
  });
  // Keep the hub's view fresh while available (a provider's position goes stale otherwise).
  useEffect(() => {
    if (!me.available) return undefined;
    const t = setInterval(() => update(true), 30000);
    return () => clearInterval(t);
  }, [me.available]);

  return (
    <div className="page provider">
      <h1>Provider</h1>
      <p role="status" className="hint" data-testid="notice">{notice}</p>
      <div className="columns">
        <section aria-labelledby="av-title">
          <h2 id="av-title">Availability</h2>
          <form className="card" onSubmit={(e) => { e.preventDefault(); update(me.available); }}>
            <div className="row">
              <Field id="pv-lat" label="Latitude"><input id="pv-lat" data-testid="provider-lat" inputMode="decimal" value={me.lat} onChange={(e) => setMe({ ...me, lat: e.target.value })} /></Field>
              <Field id="pv-lng" label="Longitude"><input id="pv-lng" data-testid="provider-lng" inputMode="decimal" value={me.lng} onChange={(e) => setMe({ ...me, lng: e.target.value })} /></Field>
            </div>
            <Field id="pv-cats" label="Categories (comma separated)"><input id="pv-cats" data-testid="provider-categories" value={me.categories} onChange={(e) => setMe({ ...me, categories: e.target.value })} /></Field>
            <label className="check">
              <input type="checkbox" data-testid="availability-toggle" checked={!!me.available}
                onChange={(e) => update(e.target.checked)} />
              Available for work
            </label>
            <button type="submit" disabled={busy}>Update location</button>
            <ErrorText error={error} />
          </form>
          <h2>Offers</h2>
          <ul className="list" aria-live="polite">
            {offers.length === 0 ? <li className="hint">No offers yet.</li> : null}
            {offers.map((o) => <OfferItem key={o.booking} offer={o} onDone={setOffer} />)}
          </ul>
        </section>
        <section aria-labelledby="feed-title">
          <h2 id="feed-title">Job feed</h2>
          <ul className="list">
            {feed.length === 0 ? <li className="hint">No jobs announced to you yet.</li> : null}
            {feed.map((j) => <FeedItem key={j.job} job={j} onBid={(job) => setMyJobs((old) => (old.includes(job) ? old : [job, ...old].slice(0, 50)))} />)}
          </ul>
          <h2>Your bids</h2>
          {myJobs.map((id) => <JobView key={id} job={id} />)}
        </section>
      </div>
    </div>
  );
}
