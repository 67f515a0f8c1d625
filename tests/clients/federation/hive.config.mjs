// Hive Gateway (hive-gateway supergraph -c hive.config.mjs): the caller's Authorization goes to
// every subgraph request, and roomEvents goes to the collaboration service over its WebSocket
// (graphql-transport-ws) with the caller's token in connection_init. A WebSocket client's own
// connection_init payload lands in context.headers too, so both kinds of caller work. Without
// `subscriptions.kind: 'ws'` Hive would send subscriptions over HTTP, which the service refuses.
import { defineConfig } from '@graphql-hive/gateway';

export const gatewayConfig = defineConfig({
  supergraph: process.env.SUPERGRAPH,
  propagateHeaders: {
    fromClientToSubgraphs: ({ context, request }) => ({
      authorization: context?.headers?.authorization
        ?? request?.headers?.get('authorization') ?? undefined,
    }),
  },
  transportEntries: {
    collaboration: {
      options: {
        subscriptions: {
          kind: 'ws',
          location: '/graphql',
          options: { connectionParams: { authorization: '{context.headers.authorization}' } },
        },
      },
    },
  },
});
