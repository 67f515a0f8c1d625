// urql with its default exchanges (cacheExchange, fetchExchange: queries go as GET within the URL
// limit, mutations as POST) plus subscriptionExchange over graphql-ws; the token in fetchOptions
// and in connectionParams. Scenarios: `http` (queries over GET), `realtime` (common.mjs).
import { Client, cacheExchange, fetchExchange, subscriptionExchange } from '@urql/core';
import { pipe, subscribe } from 'wonka';
import {
  EVENTS, assistant, bearer, config, described, loggingFetch, queries, realtime, run, wsClient,
} from './common.mjs';

function connect(token, wsOptions = {}, fetchLog = null) {
  const ws = wsClient(token, wsOptions);
  const client = new Client({
    url: config.http,
    fetchOptions: () => ({ headers: { authorization: bearer(token) } }), // read per request
    fetch: fetchLog ? loggingFetch(fetchLog) : fetch,
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: ws.client.subscribe(request, sink) }),
        }),
      }),
    ],
  });
  const outcome = (result) => ({
    data: result.data ?? null,
    error: result.error ? described(result.error, result.error.graphQLErrors) : null,
  });
  return {
    ws,
    query: (text, variables) => client.query(text, variables, { requestPolicy: 'network-only' })
      .toPromise().then(outcome),
    mutate: (text, variables) => client.mutation(text, variables).toPromise().then(outcome),
    subscribe: (variables, onEvent, onErrors) => pipe(
      client.subscription(EVENTS, variables),
      subscribe((result) => (result.error ? onErrors(outcome(result).error)
                                          : onEvent(result.data.roomEvents))),
    ).unsubscribe,
  };
}

run({ http: () => queries(connect), realtime: () => realtime(connect),
      assistant: () => assistant(connect) });
