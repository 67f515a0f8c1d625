// Apollo Client 4 as an application sets it up: HttpLink (auth header from SetContextLink) behind
// the persisted-queries link (sha256 from node:crypto, hashed queries over GET), GraphQLWsLink
// over graphql-ws for subscriptions (token in connectionParams), InMemoryCache with possibleTypes
// generated from schema.graphql. Scenarios: `http` (queries, APQ), `realtime` (common.mjs).
import { createHash } from 'node:crypto';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { CombinedGraphQLErrors } from '@apollo/client/errors';
import { SetContextLink } from '@apollo/client/link/context';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import {
  EVENTS, assistant, bearer, config, described, loggingFetch, queries, realtime, run, wsClient,
} from './common.mjs';
import { possibleTypesOf } from './possible-types.mjs';

const sha256 = (text) => createHash('sha256').update(text).digest('hex');

function connect(token, wsOptions = {}, fetchLog = null) {
  const ws = wsClient(token, wsOptions);
  // Asked for each operation, so a refreshed token is used as soon as the app has it.
  const auth = new SetContextLink(({ headers }) => ({
    headers: { ...headers, authorization: bearer(token) },
  }));
  const fetcher = fetchLog ? loggingFetch(fetchLog) : fetch;
  const http = new HttpLink({ uri: config.http, fetch: fetcher });
  const isSubscription = ({ query }) => {
    const definition = getMainDefinition(query);
    return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
  };
  const link = ApolloLink.split(
    isSubscription,
    new GraphQLWsLink(ws.client),
    ApolloLink.from([new PersistedQueryLink({ sha256, useGETForHashedQueries: true }), auth, http]),
  );
  const client = new ApolloClient({
    link, cache: new InMemoryCache({ possibleTypes: possibleTypesOf(config.schema) }),
  });
  return { ws, client, ...adapter(client) };
}

const outcome = (result) => ({ data: result.data ?? null, error: errorOf(result.error) });
const errorOf = (error) =>
  error ? described(error, CombinedGraphQLErrors.is(error) ? error.errors : []) : null;
const failed = (error) => ({ data: null, error: errorOf(error) });

function adapter(client) {
  return {
    query: (text, variables) => client.query({ query: gql(text), variables,
                                               fetchPolicy: 'network-only' })
      .then(outcome, failed),
    mutate: (text, variables) => client.mutate({ mutation: gql(text), variables })
      .then(outcome, failed),
    subscribe: (variables, onEvent, onErrors) => {
      const subscription = client.subscribe({ query: gql(EVENTS), variables }).subscribe({
        next: (result) => (result.error ? onErrors(errorOf(result.error))
                                        : onEvent(result.data.roomEvents)),
        error: (error) => onErrors(errorOf(error)),
      });
      return () => subscription.unsubscribe();
    },
  };
}

run({ http: () => queries(connect), realtime: () => realtime(connect),
      assistant: () => assistant(connect) });
