// Apollo Client 4 with apollo-upload-client's UploadHttpLink as its terminating link, as an
// application that shares files sets it up: a File in the variables goes as a GraphQL multipart
// request, every request with the auth header and the Apollo-Require-Preflight header the service
// asks for against CSRF; an operation without files goes through the same link as JSON.
// Scenario: `upload` (config.file: the bytes to send, as report.pdf).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ApolloClient, InMemoryCache, gql } from '@apollo/client';
import { CombinedGraphQLErrors } from '@apollo/client/errors';
import UploadHttpLink from 'apollo-upload-client/UploadHttpLink.mjs';
import { bearer, config, described, emit, run } from './common.mjs';

const UPLOAD = `mutation Upload($room: ID!, $file: Upload!) {
  uploadFile(roomId: $room, file: $file) { id name contentType size sha256 status }
}`;
const FILES = 'query Files($room: ID!) { room(id: $room) { id files { edges { node { id } } } } }';

const outcome = (result) => ({ data: result.data ?? null, error: errorOf(result.error) });
const errorOf = (error) =>
  error ? described(error, CombinedGraphQLErrors.is(error) ? error.errors : []) : null;
const failed = (error) => ({ data: null, error: errorOf(error) });

async function upload() {
  const client = new ApolloClient({
    link: new UploadHttpLink({
      uri: config.http,
      headers: { authorization: bearer(config.token), 'Apollo-Require-Preflight': 'true' },
    }),
    cache: new InMemoryCache(),
  });
  const bytes = readFileSync(config.file);
  const file = new File([bytes], 'report.pdf', { type: 'application/pdf' });
  const sent = { size: file.size, sha256: createHash('sha256').update(bytes).digest('hex') };
  const result = await client.mutate({ mutation: gql(UPLOAD), variables: { room: config.room,
                                                                          file } })
    .then(outcome, failed);
  emit('uploaded', { ...result, sent });
  emit('files', await client.query({ query: gql(FILES), variables: { room: config.room },
                                     fetchPolicy: 'network-only' }).then(outcome, failed));
}

run({ upload });
