// The npm `centrifuge` SDK, unchanged, against a live hub (driven by test_node_sdk.py).
// usage: node --experimental-websocket sdk_node.mjs <url> <json|protobuf> <tokenA> <tokenB> <userB>
// Prints one JSON line of what it saw; exits 1 with the error on any failure.
const [url, mode, tokenA, tokenB, userB] = process.argv.slice(2);
const lib = mode === 'protobuf' ? await import('centrifuge/build/protobuf') : await import('centrifuge');
const { Centrifuge } = lib;
const enc = (v) => (mode === 'protobuf' ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dec = (v) => (mode === 'protobuf' ? JSON.parse(new TextDecoder().decode(v)) : v);
const timer = setTimeout(() => fail(new Error('timed out')), 30000);

function fail(err) {
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack ? err.stack : JSON.stringify(err)) }));
  process.exit(1);
}

function once(emitter, event, test = () => true) {
  return new Promise((resolve) => {
    const handler = (ctx) => {
      if (test(ctx)) {
        emitter.removeListener(event, handler);
        resolve(ctx);
      }
    };
    emitter.on(event, handler);
  });
}

try {
  const options = { websocket: globalThis.WebSocket, minReconnectDelay: 100, timeout: 10000 };
  const a = new Centrifuge(url, { ...options, token: tokenA });
  const connected = once(a, 'connected');
  const serverSub = once(a, 'subscribed');
  a.connect();
  const hello = await connected;
  const userChannel = (await serverSub).channel;

  const created = await a.rpc('rooms.create', enc({ members: [userB], kind: 'direct' }));
  const channel = `chat:${dec(created.data).room}`;
  const sub = a.newSubscription(channel);
  const pubs = [];
  sub.on('publication', (ctx) => pubs.push({ offset: Number(ctx.offset), data: dec(ctx.data) }));
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  const first = await subscribed;
  await sub.publish(enc({ n: 1 }));
  while (pubs.length < 1) await new Promise((r) => setTimeout(r, 20));

  // Recovery: A goes away, B publishes twice, A comes back and gets both, marked recovered.
  const b = new Centrifuge(url, { ...options, token: tokenB });
  b.connect();
  await b.ready(10000);
  a.disconnect();
  await b.publish(channel, enc({ n: 2 }));
  await b.publish(channel, enc({ n: 3 }));
  const again = once(sub, 'subscribed');
  a.connect();
  const back = await again;
  while (pubs.length < 3) await new Promise((r) => setTimeout(r, 20));
  let refused = null;
  try {
    await a.rpc('zones.create', enc({}));
  } catch (err) {
    refused = err.code;
  }
  clearTimeout(timer);
  console.log(JSON.stringify({
    ok: true,
    client: hello.client,
    data: dec(hello.data),
    userChannel,
    channel,
    epoch: first.streamPosition && first.streamPosition.epoch,
    recoverable: first.recoverable,
    wasRecovering: back.wasRecovering,
    recovered: back.recovered,
    pubs,
    refused,
  }));
  a.disconnect();
  b.disconnect();
  process.exit(0);
} catch (err) {
  fail(err);
}
