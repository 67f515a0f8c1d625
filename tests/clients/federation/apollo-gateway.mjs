// @apollo/gateway from a static supergraph, served by @apollo/server: the caller's Authorization is
// copied onto every subgraph request. It runs queries and mutations only (no subscriptions).
// CLIENT_CONFIG: { supergraph: path, port }.
import { readFileSync } from 'node:fs';
import { ApolloGateway, RemoteGraphQLDataSource } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';

const config = JSON.parse(process.env.CLIENT_CONFIG ?? '{}');

class Forwarding extends RemoteGraphQLDataSource {
  willSendRequest({ request, context }) {
    if (context.authorization) request.http.headers.set('authorization', context.authorization);
  }
}

const gateway = new ApolloGateway({
  supergraphSdl: readFileSync(config.supergraph, 'utf8'),
  buildService: ({ url }) => new Forwarding({ url }),
});
const server = new ApolloServer({ gateway });
const { url } = await startStandaloneServer(server, {
  listen: { host: '127.0.0.1', port: config.port },
  context: async ({ req }) => ({ authorization: req.headers.authorization }),
});
console.log(`apollo gateway at ${url}`);
