// Bundles GraphiQL (with the explorer plugin) and Monaco's workers into dist/, which is
// committed so that running the service never needs Node. `make graphiql` runs this after
// `npm ci`. Everything the page loads comes from dist/: no CDN, no inline script.
import { build } from 'esbuild';
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const NOTICE = '/* Built from npm packages; their licences: THIRD-PARTY-LICENSES.txt */';
const common = {
  bundle: true, minify: true, target: 'es2022', legalComments: 'none', logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' }, metafile: true,
  banner: { js: NOTICE, css: NOTICE },
};

// Monaco runs its language services in workers; the page names them by URL (see main.jsx).
const workers = {
  'editor.worker': 'monaco-editor/esm/vs/editor/editor.worker.js',
  'json.worker': 'monaco-editor/esm/vs/language/json/json.worker.js',
  'graphql.worker': 'monaco-graphql/esm/graphql.worker.js',
};

rmSync(dist, { recursive: true, force: true });
const results = [
  await build({
    ...common, entryPoints: { graphiql: join(here, 'src/main.jsx') }, outdir: dist,
    format: 'iife', jsx: 'automatic', loader: { '.ttf': 'file', '.woff2': 'file' },
    assetNames: '[name]',
  }),
  await build({ ...common, entryPoints: workers, outdir: dist, format: 'iife' }),
];

// The licence of every package that contributed code to the bundle, next to it.
const packages = new Set();
for (const { metafile } of results) {
  for (const input of Object.keys(metafile.inputs)) {
    const match = input.match(/^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//);
    if (match) packages.add(match[1]);
  }
}
const sections = [...packages].sort().map((dir) => {
  const meta = JSON.parse(readFileSync(join(here, dir, 'package.json'), 'utf8'));
  const file = readdirSync(join(here, dir)).find((name) => /^(licen[cs]e|copying)/i.test(name));
  const text = file ? readFileSync(join(here, dir, file), 'utf8').trim()
    : `(no licence file in the package; package.json says: ${meta.license})`;
  return `${meta.name} ${meta.version} (${meta.license})\n${'-'.repeat(72)}\n${text}\n`;
});
writeFileSync(join(dist, 'THIRD-PARTY-LICENSES.txt'),
  'Licences of the packages bundled into the files of this folder.\n\n' +
  sections.join('\n'));
for (const name of readdirSync(dist).sort()) console.log(relative(here, join(dist, name)));
