// Chat: the caller's rooms, a room's history and live messages, who is here and who is typing,
// the AI assist toggle (answers stream in token by token, private to the asker) and the call button.
import { useEffect, useRef, useState } from 'react';
import { startCall } from '../call.jsx';
import { ErrorText, useAction, useHub, useUserEvents } from '../ui.jsx';

const TYPING_MS = 4000;

function RoomList({ rooms, current, onPick }) {
  const hub = useHub();
  return (
    <ul className="list rooms" aria-label="Rooms">
      {rooms.map((r) => {
        const others = r.members.filter((m) => m !== hub.me.user);
        return (
          <li key={r.room}>
            <button type="button" data-testid="room-item" data-room={r.room} aria-current={current === r.room ? 'true' : undefined}
              onClick={() => onPick(r.room)}>
              {others.join(', ') || r.room} <small>{r.kind}</small>
            </button>
          </li>
        );
      })}
    </ul>
  );
}

function Room({ room }) {
  const hub = useHub();
  const [messages, setMessages] = useState([]);
  const [present, setPresent] = useState([]);
  const [typing, setTyping] = useState({});
  const [text, setText] = useState('');
  const [assistOn, setAssistOn] = useState(false);
  const [answers, setAnswers] = useState({});
  const chRef = useRef(null);
  const pending = useRef({}); // assist pushes that came before the rpc reply
  const known = useRef(new Set());
  const lastTyping = useRef(0);
  const [run, busy, error] = useAction();
  const bottom = useRef(null);

  const add = (items) => setMessages((old) => {
    const seen = new Set(old.map((m) => m.offset));
    const merged = [...old, ...items.filter((m) => !seen.has(m.offset))];
    return merged.sort((a, b) => a.offset - b.offset);
  });

  useEffect(() => {
    setMessages([]); setPresent([]); setTyping({});
    const ch = hub.subscribe(`chat:${room}`, {
      publication: (p) => {
        if (!p.offset) { // not stored: a signal (typing) carried as a publication without offset
          const d = p.data || {};
          if (d.push === 'signal' && d.data && d.data.typing && d.from !== hub.me.user) setTyping((t) => ({ ...t, [d.from]: Date.now() }));
          return;
        }
        add([{ offset: p.offset, from: p.from, data: p.data, at: Date.now() }]);
        setTyping((t) => { const n = { ...t }; delete n[p.from]; return n; });
      },
      join: (u) => setPresent((ps) => (ps.includes(u) ? ps : [...ps, u])),
      leave: (u) => setPresent((ps) => ps.filter((x) => x !== u)),
    });
    chRef.current = ch;
    ch.ready().then(async () => {
      add((await ch.history(50)).map((p) => ({ ...p, at: null })));
      setPresent([...new Set(await ch.presence())]);
    }).catch(() => {});
    return () => { ch.close(); chRef.current = null; };
  }, [hub, room]);

  // Assist answers arrive on user:<me> as publications without offset (see docs/console.md).
  useEffect(() => hub.listen((ev) => {
    const d = ev.data;
    if (!d || typeof d !== 'object') return;
    if (d.push === 'assist' || (d.assist && (d.delta !== undefined || d.done || d.error))) {
      const id = d.assist;
      if (!known.current.has(id)) { (pending.current[id] ||= []).push(d); return; }
      setAnswers((all) => (all[id] ? { ...all, [id]: applyAssist(all[id], d) } : all));
    }
  }), [hub, room]);

  useEffect(() => { bottom.current && bottom.current.scrollIntoView && bottom.current.scrollIntoView({ block: 'nearest' }); }, [messages.length, answers]);

  const send = (e) => {
    e.preventDefault();
    const body = text.trim();
    if (!body) return;
    // Cleared at once: the next message can be typed (and sent) while this one is on its way.
    setText('');
    run(async () => {
      try {
        await deliver(body);
      } catch (err) {
        setText((t) => t || body); // not sent: give the words back
        throw err;
      }
    });
  };
  const deliver = async (body) => {
    if (assistOn) {
      const res = await hub.rpc('assist.ask', { prompt: body, room });
      const id = res.assist;
      known.current.add(id);
      const early = pending.current[id] || [];
      delete pending.current[id];
      setAnswers((all) => {
        let a = { id, prompt: body, text: '', state: 'streaming', order: Date.now() };
        for (const d of early) a = applyAssist(a, d);
        return { ...all, [id]: a };
      });
    } else {
      await chRef.current.publish({ text: body });
    }
  };
  const onType = (v) => {
    setText(v);
    const now = Date.now();
    if (now - lastTyping.current > 2000) {
      lastTyping.current = now;
      hub.signal(`chat:${room}`, { typing: true }).catch(() => {});
    }
  };
  const call = (media) => run(() => startCall(hub, room, media));
  const typers = Object.entries(typing).filter(([, at]) => Date.now() - at < TYPING_MS).map(([u]) => u);
  const assistList = Object.values(answers).sort((a, b) => a.order - b.order);

  return (
    <section className="room" aria-label={`Room ${room}`}>
      <div className="row between">
        <p className="hint" data-testid="presence">Here: {present.join(', ') || '—'}</p>
        <div className="row">
          <button type="button" data-testid="call-start" onClick={() => call('video')} disabled={busy}>Video call</button>
          <button type="button" data-testid="call-voice" onClick={() => call('voice')} disabled={busy}>Voice call</button>
        </div>
      </div>
      <ol className="messages" aria-live="polite" aria-label="Messages">
        {messages.map((m) => (
          <li key={m.offset} data-testid="chat-message" data-offset={m.offset} className={m.from === hub.me.user ? 'mine' : ''}>
            <strong>{m.from === hub.me.user ? 'You' : (m.from || 'hub')}</strong>{' '}
            <span className="text">{m.data == null ? '(erased)' : (typeof m.data.text === 'string' ? m.data.text : JSON.stringify(m.data))}</span>
          </li>
        ))}
        {assistList.map((a) => (
          <li key={a.id} className="assist" data-testid="assist-answer" data-state={a.state}>
            <strong>AI assist</strong> <small>(only you see this) · {a.prompt}</small>
            <div className="text">{a.text}</div>
            {a.state === 'incomplete' ? <small role="status" className="warn">The answer is incomplete: {a.error}</small> : null}
            {a.state === 'failed' ? <small role="status" className="warn">No answer: {a.error}</small> : null}
            {a.state === 'done' && a.finish && a.finish !== 'stop' ? <small role="status" className="warn">Stopped early ({a.finish}).</small> : null}
          </li>
        ))}
        <li ref={bottom} aria-hidden="true" className="end" />
      </ol>
      <p className="hint typing" data-testid="typing" aria-live="polite">{typers.length ? `${typers.join(', ')} typing…` : '\u00a0'}</p>
      <form className="composer" onSubmit={send}>
        <label className="check">
          <input type="checkbox" data-testid="assist-toggle" checked={assistOn} onChange={(e) => setAssistOn(e.target.checked)} />
          Ask AI assist
        </label>
        <label htmlFor="chat-input" className="sr-only">{assistOn ? 'Question for AI assist' : 'Message'}</label>
        <input id="chat-input" data-testid="chat-input" autoComplete="off" value={text} onChange={(e) => onType(e.target.value)}
          placeholder={assistOn ? 'Ask the assistant about this conversation' : 'Write a message'} />
        <button type="submit" data-testid="chat-send">Send</button>
      </form>
      <ErrorText error={error} />
    </section>
  );
}

function applyAssist(a, d) {
  if (d.delta !== undefined && d.delta !== null) return { ...a, text: a.text + d.delta };
  if (d.done) return { ...a, state: 'done', finish: d.finish, provider: d.provider };
  if (d.error) return { ...a, state: d.incomplete ? 'incomplete' : 'failed', error: `${d.error.code}: ${d.error.message}` };
  return a;
}

export default function Chat() {
  const hub = useHub();
  const [rooms, setRooms] = useState([]);
  const [current, setCurrent] = useState(null);
  const [member, setMember] = useState('');
  const [run, busy, error] = useAction();
  const load = () => run(async () => {
    const res = await hub.rpc('rooms.list', { limit: 100 });
    setRooms(res.rooms);
    setCurrent((c) => c || (res.rooms[0] && res.rooms[0].room) || null);
  });
  useEffect(() => { load(); }, []);
  useUserEvents(['room.new'], () => load());
  const create = (e) => {
    e.preventDefault();
    const members = member.split(',').map((m) => m.trim()).filter(Boolean);
    run(async () => {
      const res = await hub.rpc('rooms.create', { members, kind: members.length === 1 ? 'direct' : 'booking' });
      setMember('');
      await load();
      setCurrent(res.room);
    });
  };
  return (
    <div className="page chat">
      <h1>Chat</h1>
      <div className="split chat-split">
        <aside>
          <form onSubmit={create} className="card">
            <label htmlFor="room-member">Start a conversation with (user ids, comma separated)</label>
            <input id="room-member" data-testid="room-member" value={member} onChange={(e) => setMember(e.target.value)} />
            <button type="submit" data-testid="room-create" disabled={busy}>Open room</button>
          </form>
          <RoomList rooms={rooms} current={current} onPick={setCurrent} />
          <ErrorText error={error} />
        </aside>
        {current ? <Room key={current} room={current} /> : <p className="hint">No room yet: open one with someone.</p>}
      </div>
    </div>
  );
}

