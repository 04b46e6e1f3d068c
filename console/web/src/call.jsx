// Calls: one at a time, shown above every page. The caller starts it from a chat room; invitees
// hear about it on their user: channel (call.invite) and accept or decline; both follow the call's
// own channel (call:<id>) for accepted/declined/ended. With real Agora credentials the Agora Web
// SDK (a separate chunk, loaded only now) joins the channel with the token the hub minted; with the
// development pair the panel shows the token and channel instead.
import { useEffect, useRef, useState } from 'react';
import { ErrorText, useHub, useNow, useUserEvents } from './ui.jsx';

let setGlobal = null;
// Called by the chat page's call button.
export async function startCall(hub, room, media) {
  const res = await hub.rpc('calls.start', { room, media });
  setGlobal && setGlobal({ call: res.call, room, media, mine: true, status: 'ringing', agora: res.agora,
    since: Date.now(), answeredAt: null });
  return res;
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

async function joinAgora(agora, videoEl, media) {
  const { default: AgoraRTC } = await import('agora-rtc-sdk-ng');
  const client = AgoraRTC.createClient({ mode: 'rtc', codec: 'vp8' });
  await client.join(agora.app_id, agora.channel, agora.token, agora.uid);
  const tracks = media === 'video'
    ? await AgoraRTC.createMicrophoneAndCameraTracks()
    : [await AgoraRTC.createMicrophoneAudioTrack()];
  await client.publish(tracks);
  if (media === 'video' && videoEl) tracks[1].play(videoEl);
  client.on('user-published', async (user, kind) => {
    await client.subscribe(user, kind);
    if (kind === 'audio') user.audioTrack.play();
    if (kind === 'video' && videoEl) user.videoTrack.play(videoEl);
  });
  return async () => { tracks.forEach((t) => t.close()); await client.leave(); };
}

export function CallPanel() {
  const hub = useHub();
  const [call, setCall] = useState(null);
  const [error, setError] = useState(null);
  const [agoraState, setAgoraState] = useState('');
  const videoRef = useRef(null);
  const leaveRef = useRef(null);
  const now = useNow(500);
  setGlobal = setCall;

  const update = (patch) => setCall((c) => (c && (!patch.call || patch.call === c.call) ? { ...c, ...patch } : c));

  useUserEvents(['call.invite', 'call.accepted', 'call.declined', 'call.missed'], (d) => {
    if (d.kind === 'call.invite') {
      setCall((c) => (c && c.status !== 'ended' ? c : { call: d.call, room: d.room, media: d.media, from: d.from,
        mine: false, status: 'ringing', since: Date.now(), ringS: d.ring_s, answeredAt: null }));
    } else if (d.kind === 'call.accepted') {
      update({ call: d.call, status: 'active', answeredAt: Date.now(), peer: d.user });
    } else if (d.kind === 'call.declined') {
      update({ call: d.call, status: 'declined', peer: d.user });
    } else if (d.kind === 'call.missed') {
      update({ call: d.call, status: 'missed' });
    }
  });

  // The call's own channel: accepted/declined/ended whoever caused them.
  const callId = call ? call.call : null;
  useEffect(() => {
    if (!callId) return undefined;
    const ch = hub.subscribe(`call:${callId}`, {
      publication: ({ data }) => {
        if (!data) return;
        if (data.kind === 'call.accepted') update({ call: callId, status: 'active', answeredAt: Date.now() });
        if (data.kind === 'call.ended') update({ call: callId, status: 'ended', outcome: data.outcome, durationS: data.duration_s });
      },
    });
    return () => ch.close();
  }, [hub, callId]);

  // Real credentials: join Agora once we hold a token and the call is live.
  const agora = call && call.agora;
  const live = call && call.status === 'active' && agora && !agora.development;
  useEffect(() => {
    if (!live) return undefined;
    let cancelled = false;
    setAgoraState('joining');
    joinAgora(agora, videoRef.current, call.media).then((leave) => {
      if (cancelled) { leave(); return; }
      leaveRef.current = leave;
      setAgoraState('joined');
    }).catch((e) => { setAgoraState('failed'); setError(e); });
    return () => { cancelled = true; if (leaveRef.current) { leaveRef.current(); leaveRef.current = null; } };
  }, [live]);

  if (!call) return null;
  const act = async (fn) => {
    setError(null);
    try { await fn(); } catch (e) { setError(e); }
  };
  const accept = () => act(async () => {
    const res = await hub.rpc('calls.accept', { call: call.call });
    update({ call: call.call, status: 'active', agora: res.agora, answeredAt: Date.now() });
  });
  const decline = () => act(async () => {
    await hub.rpc('calls.decline', { call: call.call });
    update({ call: call.call, status: 'declined' });
  });
  const end = () => act(async () => {
    const res = await hub.rpc('calls.end', { call: call.call });
    update({ call: call.call, status: 'ended', outcome: res.outcome, durationS: res.duration_s });
  });
  const over = ['ended', 'declined', 'missed'].includes(call.status);
  const who = call.mine ? 'Outgoing' : `Incoming from ${call.from}`;
  return (
    <section className="call card" aria-label="Call" aria-live="polite">
      <p><strong>{who} {call.media} call</strong> · 
        State: <strong data-testid="call-state" data-state={call.status}>{call.status}</strong>
        {call.status === 'ringing' && call.ringS ? <> · <span data-testid="call-ring">{Math.max(0, Math.ceil(call.ringS - (now - call.since) / 1000))} s to answer</span></> : null}
        {call.status === 'active' && call.answeredAt ? <> · <span data-testid="call-duration">{duration(now - call.answeredAt)}</span></> : null}
        {call.status === 'ended' && call.durationS != null ? <> · {call.durationS} s ({call.outcome})</> : null}
      </p>
      {agora && agora.development && call.status === 'active' ? (
        <details data-testid="call-agora">
          <summary>Development credentials (no media): Agora channel <code>{agora.channel}</code>, uid <code>{agora.uid}</code></summary>
          <p>Token: <code className="wrap">{agora.token}</code></p>
        </details>
      ) : null}
      {live ? <p>Agora: {agoraState}</p> : null}
      <div ref={videoRef} className="video" hidden={!live} />
      <div className="row">
        {!call.mine && call.status === 'ringing' ? (
          <>
            <button type="button" data-testid="call-accept" onClick={accept}>Accept</button>
            <button type="button" data-testid="call-decline" onClick={decline}>Decline</button>
          </>
        ) : null}
        {!over ? <button type="button" data-testid="call-end" onClick={end}>{call.status === 'ringing' && call.mine ? 'Cancel' : 'Hang up'}</button> : null}
        {over ? <button type="button" onClick={() => setCall(null)}>Close</button> : null}
      </div>
      <ErrorText error={error} />
    </section>
  );
}
