// possibleTypes for Apollo's InMemoryCache, generated from the exported SDL (schema.graphql), so
// a new RoomEvent type needs no hand edit. `node possible-types.mjs ../../schema.graphql` prints
// them as JSON (what an application's build step would write to possibleTypes.json).
import { readFileSync } from 'node:fs';
import { buildASTSchema, isAbstractType, parse } from 'graphql';

export function possibleTypesOf(sdlPath) {
  // The federation directives (@key, @link) are not defined in the SDL: skip SDL validation.
  const schema = buildASTSchema(parse(readFileSync(sdlPath, 'utf8')), { assumeValidSDL: true });
  const found = {};
  for (const type of Object.values(schema.getTypeMap())) {
    if (isAbstractType(type) && !type.name.startsWith('__')) {
      found[type.name] = schema.getPossibleTypes(type).map((t) => t.name).sort();
    }
  }
  return found;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(`${JSON.stringify(possibleTypesOf(process.argv[2]), null, 2)}\n`);
}
