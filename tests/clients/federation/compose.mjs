// Composes a supergraph with @apollo/composition from subgraph SDLs, as rover would: each argument
// is name=http://…/graphql (its `_service { sdl }`, asked without a token) or name=file:path.
// Prints one JSON line { errors, hints } (code and message each) and, without errors, writes the
// supergraph to CLIENT_CONFIG.out.
import { readFileSync, writeFileSync } from 'node:fs';
import { composeServices } from '@apollo/composition';
import { parse } from 'graphql';

const config = JSON.parse(process.env.CLIENT_CONFIG ?? '{}');

async function sdlOf(source) {
  if (source.startsWith('file:')) return readFileSync(source.slice(5), 'utf8');
  const response = await fetch(source, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: '{ _service { sdl } }' }),
  });
  const body = await response.json();
  if (!body.data) throw new Error(`${source}: ${JSON.stringify(body)}`);
  return body.data._service.sdl;
}

const services = await Promise.all(process.argv.slice(2).map(async (argument) => {
  const [name, source] = argument.split(/=(.*)/s);
  const url = source.startsWith('file:') ? `http://${name}.invalid/graphql` : source;
  return { name, url, typeDefs: parse(await sdlOf(source)) };
}));
const result = composeServices(services);
const brief = (list) => (list ?? []).map((e) => ({ code: e.extensions?.code ?? e.definition?.code,
                                                   message: e.message }));
if (!result.errors && config.out) writeFileSync(config.out, result.supergraphSdl);
process.stdout.write(`${JSON.stringify({ errors: brief(result.errors),
                                         hints: brief(result.hints) })}\n`);
