// What every client script shares: the configuration the Python test passes (CLIENT_CONFIG,
// JSON), JSON lines on stdout, commands on stdin, the graphql-ws transport and RoomFeed (resume
// with `after`, drop duplicates). Kept small: the scripts show each library's own set-up.
import { createInterface } from 'node:readline';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

export const config = JSON.parse(process.env.CLIENT_CONFIG ?? '{}');
export const bearer = (token) => `Bearer ${token}`;

export function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Waits for the test to write `name` on stdin (the test's half of each step). */
async function command(name) {
  const { value, done } = await input.next();
  if (done || value.trim() !== name) throw new Error(`expected command ${name}, got ${value}`);
}

/** Runs the scenario; any failure is one `failed` line and exit status 1. */
export function run(scenarios) {
  const scenario = scenarios[process.argv[2]];
  if (!scenario) throw new Error(`unknown scenario ${process.argv[2]}`);
  scenario().then(
    () => { emit('done'); process.exit(0); },
    (error) => { emit('failed', { message: String(error?.stack ?? error) }); process.exit(1); },
  );
}

const codesOf = (errors) => (errors ?? []).map((e) => e.extensions?.code ?? null);

/** A graphql-ws client for `token`. After the library reconnects by itself (it retries a dropped
 * socket with back-off), `onRetry` runs before it re-sends any subscription. */
export function wsClient(token, { onRetry = () => {}, retryWait } = {}) {
  const holder = {};
  holder.client = createClient({
    url: config.ws,
    webSocketImpl: WebSocket,
    connectionParams: () => ({ authorization: bearer(token) }), // read at every (re)connect
    ...(retryWait ? { retryWait } : {}),
    on: {
      connected: (socket, _payload, wasRetry) => {
        holder.socket = socket;
        if (wasRetry) onRetry();
      },
    },
  });
  return holder;
}

/** The test's "network failure": the TCP connection goes away without a close frame (the server
 * sees 1006), and the library does not reconnect until the test says `resume`. */
const dropSocket = (holder) => holder.socket.terminate();
const retryAfterCommand = () => command('resume');

/** One room's event stream as an application should follow it. Durable events (`durable: true`)
 * each have their own cursor (it stands for the room's seq): the last one is where to resume
 * (`after`), and one seen before is a duplicate; ephemeral ones (typing, presence, calls, an
 * assistant's answer while it streams) carry the last durable cursor and are never replayed.
 * Direct to the service there are no duplicates; through a gateway that re-subscribes silently
 * with the original variables there can be. `subscribe(variables, onEvent, onErrors)`
 * is the client library's own call; it returns the unsubscribe function. */
export class RoomFeed {
  constructor(roomId, subscribe, { onEvent, onErrors }) {
    Object.assign(this, { roomId, subscribe, onEvent, onErrors });
    this.cursor = null;
    this.seen = new Set();
    this.stop = null;
  }

  start() {
    this.stop?.();
    const variables = { room: this.roomId, after: this.cursor };
    this.stop = this.subscribe(variables, (event) => this.accept(event), this.onErrors);
  }

  accept(event) {
    if (event.durable) {
      if (this.seen.has(event.cursor)) {
        emit('duplicate', { cursor: event.cursor });
        return;
      }
      this.seen.add(event.cursor);
      this.cursor = event.cursor;
    }
    this.onEvent(event);
  }
}

export const EVENTS = `
subscription RoomEvents($room: ID!, $after: String) {
  roomEvents(roomId: $room, after: $after) {
    ...EventBase
    ... on MessagePosted { message { id content seq author { id } } }
    ... on AssistantReplyUpdated { reply { id text done status citations } }
  }
}
fragment EventBase on RoomEvent { __typename cursor roomId durable }`;
export const ASK = `mutation Ask($room: ID!, $prompt: String!) {
  askAssistant(roomId: $room, prompt: $prompt) { id done status text }
}`;
export const ME = 'query Me { me { id displayName role } }';
export const ROOM = `query Room($room: ID!) {
  room(id: $room) { id name participants { role user { id } } }
}`;
export const BAD_PAGE = 'query BadPage { rooms(first: 1000) { totalCount } }';
export const SEND = `mutation Send($room: ID!, $content: String!) {
  sendMessage(roomId: $room, input: { content: $content }) { id content seq }
}`;

/** A fetch that records what each HTTP request carried (GET or POST, the query text, an APQ hash)
 * and what came back. */
export function loggingFetch(log) {
  return async (uri, init = {}) => {
    const url = new URL(uri);
    const body = init.body ? JSON.parse(init.body) : {};
    const extensions = body.extensions ?? JSON.parse(url.searchParams.get('extensions') ?? '{}');
    const response = await fetch(uri, init);
    log.push({
      method: init.method ?? 'GET', query: Boolean(body.query ?? url.searchParams.get('query')),
      hash: Boolean(extensions.persistedQuery), status: response.status,
      contentType: response.headers.get('content-type'),
    });
    return response;
  };
}

/** The HTTP scenario: queries (one of them twice), a failing query, and what went over the wire.
 * `connect(token, wsOptions, log)` as for `realtime`, its fetch recording into `log`. The
 * operation names carry `config.nonce`: documents the service has not seen (nor their hashes). */
export async function queries(connect) {
  const requests = [];
  const member = connect(config.token, {}, requests);
  const fresh = (text) => text.replace(/^query (\w+)/, `query $1_${config.nonce}`);
  emit('me', await member.query(fresh(ME)));
  emit('room', await member.query(fresh(ROOM), { room: config.room }));
  emit('me-again', await member.query(fresh(ME)));
  emit('bad-query', await member.query(fresh(BAD_PAGE)));
  emit('requests', { requests });
}

/** `{ name, codes }` of an error object as the library hands it to the application. */
export const described = (error, errors) => ({ kind: error?.name ?? null, codes: codesOf(errors) });

/**
 * The real-time scenario, the same for every client. `connect(token, options)` returns the
 * library's adapter: { query, mutate, subscribe, ws } where query/mutate resolve to
 * { data, error: { kind, codes } | null } and subscribe is RoomFeed's subscribe.
 */
export async function realtime(connect) {
  let restarted;
  const back = new Promise((resolve) => { restarted = resolve; });
  const member = connect(config.token, {
    onRetry: () => { feed.start(); restarted(); },
    retryWait: retryAfterCommand,
  });
  const feed = new RoomFeed(config.room, member.subscribe, {
    onEvent: (event) => emit('room-event', eventFields(event)),
    onErrors: (error) => emit('subscription-error', error),
  });
  emit('me', await member.query(ME));
  feed.start();
  emit('subscribing');
  await command('go');
  for (const n of [1, 2, 3]) {
    emit('sent', await member.mutate(SEND, { room: config.room, content: `sent ${n}` }));
  }
  await command('drop');
  dropSocket(member.ws);
  emit('dropped');
  await back; // the test said `resume`: the library reconnected, the feed resumed after its cursor
  emit('resubscribed', { after: feed.cursor === null ? null : 'cursor' });
  await command('finish');
  feed.stop();
  emit('missing-room', await member.mutate(SEND, { room: 'no-such-room', content: 'x' }));
  emit('bad-query', await member.query(BAD_PAGE));
  await outsiderRefused(connect);
}

/** The assistant scenario: a question, and its answer as the library hands it to the application
 * on roomEvents: snapshots of the text while it streams (ephemeral), then the durable end. */
export async function assistant(connect) {
  const member = connect(config.token);
  let ended;
  const end = new Promise((resolve) => { ended = resolve; });
  const feed = new RoomFeed(config.room, member.subscribe, {
    onEvent: (event) => {
      if (event.__typename !== 'AssistantReplyUpdated') return;
      emit('reply', { durable: event.durable, cursor: event.cursor, ...event.reply });
      if (event.reply.done) ended();
    },
    onErrors: (error) => emit('subscription-error', error),
  });
  feed.start();
  emit('subscribing');
  await command('go');
  emit('asked', await member.mutate(ASK, { room: config.room, prompt: 'What next?' }));
  await end;
  feed.stop();
}

async function outsiderRefused(connect) {
  const outsider = connect(config.outsiderToken);
  const refused = await new Promise((resolve) => {
    outsider.subscribe({ room: config.room, after: null },
      (event) => resolve({ unexpected: event }), resolve);
  });
  emit('outsider', refused);
}

function eventFields(event) {
  const { message } = event;
  return { typename: event.__typename, cursor: event.cursor, roomId: event.roomId,
           content: message?.content ?? null, seq: message?.seq ?? null };
}
