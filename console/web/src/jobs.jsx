// One custom job, as its owner or a provider on it sees it: status, bids (the owner sees every
// live bid with amounts, a provider only their own), questions and answers, comments, and the
// actions the caller may take. Live: the job's stream (job:<id>) and bid.placed on user:<me>.
import { useEffect, useState } from 'react';
import { ErrorText, money, useAction, useHub, useUserEvents } from './ui.jsx';

export function JobView({ job }) {
  const hub = useHub();
  const [info, setInfo] = useState(null);
  const [events, setEvents] = useState([]);
  const [comment, setComment] = useState('');
  const [answers, setAnswers] = useState({});
  const [reason, setReason] = useState('');
  const [run, busy, error] = useAction();
  const [load, , loadError] = useAction();
  const refresh = () => load(async () => setInfo(await hub.rpc('jobs.get', { job })));

  useEffect(() => {
    refresh();
    const ch = hub.subscribe(`job:${job}`, {
      publication: (p) => {
        if (!p.data) return;
        setEvents((old) => (old.some((e) => e.offset === p.offset) ? old : [...old, { offset: p.offset, ...p.data }]));
        if (p.data.kind === 'status' || p.data.kind === 'bid') refresh();
      },
      error: () => {},
    });
    ch.ready().then(async () => {
      const past = await ch.history(100);
      setEvents((old) => {
        const seen = new Set(old.map((e) => e.offset));
        return [...past.filter((p) => p.data && !seen.has(p.offset)).map((p) => ({ offset: p.offset, ...p.data })), ...old]
          .sort((a, b) => a.offset - b.offset);
      });
    }).catch(() => {}); // a provider who only asked may not read the stream
    return () => ch.close();
  }, [hub, job]);
  useUserEvents(['bid.placed', 'bid.accepted', 'bid.rejected', 'query.answered'], (d) => { if (d.job === job) refresh(); });

  if (!info) return <div className="card"><p>Job {job}…</p><ErrorText error={loadError} /></div>;
  const owner = info.owner === hub.me.user;
  const mineAccepted = info.provider === hub.me.user;
  const act = (method, params) => run(async () => { await hub.rpc(method, { job, ...params }); await refresh(); });
  const queries = events.filter((e) => e.kind === 'query');
  const answered = new Map(events.filter((e) => e.kind === 'answer').map((e) => [e.query, e.text]));
  const comments = events.filter((e) => e.kind === 'comment');
  const closed = ['completed', 'cancelled'].includes(info.status);
  return (
    <article className="card job" data-testid="job-card" data-job={job} aria-label={`Job ${info.title}`}>
      <h3>{info.title} <small>{info.category}</small></h3>
      <p>Status: <strong data-testid="job-status" data-status={info.status}>{info.status}</strong>
        {' '}· budget {money(info.budget, info.currency)}{info.provider ? ` · provider ${info.provider}` : ''}</p>
      <p className="hint">{info.description}</p>
      <h4>Bids</h4>
      <ul className="list">
        {info.bids.length === 0 ? <li className="hint">No bids yet.</li> : null}
        {info.bids.map((b) => (
          <li key={b.bid} data-testid="bid-item" data-bid={b.bid}>
            {b.provider} · {money(b.amount, b.currency)} {b.note ? `· ${b.note}` : ''} · {b.status}
            {owner && info.status === 'open' && b.status !== 'rejected' ? (
              <button type="button" data-testid="bid-accept" disabled={busy} onClick={() => act('jobs.accept', { bid: b.bid })}>Accept bid</button>
            ) : null}
          </li>
        ))}
      </ul>
      <div className="row">
        {mineAccepted && info.status === 'accepted' ? <button type="button" data-testid="job-start" onClick={() => act('jobs.start', {})}>Start the job</button> : null}
        {(owner || mineAccepted) && info.status === 'in_progress' ? <button type="button" data-testid="job-complete" onClick={() => act('jobs.complete', {})}>Mark completed</button> : null}
      </div>
      {(owner || mineAccepted) && !closed ? (
        <form className="row" onSubmit={(e) => { e.preventDefault(); act('jobs.cancel', { reason: reason || 'no reason given' }); }}>
          <label htmlFor={`cancel-${job}`} className="sr-only">Reason to cancel</label>
          <input id={`cancel-${job}`} placeholder="Reason to cancel" value={reason} onChange={(e) => setReason(e.target.value)} />
          <button type="submit">Cancel job</button>
        </form>
      ) : null}
      {queries.length ? <h4>Questions</h4> : null}
      <ul className="list">
        {queries.map((q) => (
          <li key={q.query} data-testid="job-query">
            <strong>{q.by}:</strong> {q.text}
            {answered.has(q.query) ? <div>↳ {answered.get(q.query)}</div> : owner && !closed ? (
              <form className="row" onSubmit={(e) => { e.preventDefault(); act('jobs.answer', { query: q.query, text: answers[q.query] || '' }); }}>
                <label htmlFor={`ans-${q.query}`} className="sr-only">Answer</label>
                <input id={`ans-${q.query}`} data-testid="answer-input" value={answers[q.query] || ''} onChange={(e) => setAnswers({ ...answers, [q.query]: e.target.value })} />
                <button type="submit" data-testid="answer-send">Answer</button>
              </form>
            ) : null}
          </li>
        ))}
      </ul>
      <h4>Comments</h4>
      <ul className="list">
        {comments.map((c) => <li key={c.comment} data-testid="job-comment"><strong>{c.by}:</strong> {c.text}</li>)}
      </ul>
      {!closed ? (
        <form className="row" onSubmit={(e) => { e.preventDefault(); act('jobs.comment', { text: comment }).then(() => setComment('')); }}>
          <label htmlFor={`comment-${job}`} className="sr-only">Comment</label>
          <input id={`comment-${job}`} data-testid="comment-input" placeholder="Comment" value={comment} onChange={(e) => setComment(e.target.value)} />
          <button type="submit" data-testid="comment-send">Comment</button>
        </form>
      ) : null}
      <ErrorText error={error} />
    </article>
  );
}
