// GraphiQL for /graphql, served by the service itself (transport/ide.py): the page is plain
// HTML with no inline script, so a Content-Security-Policy of 'self' holds.
import { explorerPlugin } from '@graphiql/plugin-explorer';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
import { createRoot } from 'react-dom/client';
import 'graphiql/style.css';
import '@graphiql/plugin-explorer/style.css';
import './page.css';

const ASSETS = '/graphiql/';
globalThis.MonacoEnvironment = {
  getWorker(_id, label) {
    const name = label === 'json' || label === 'graphql' ? label : 'editor';
    return new Worker(`${ASSETS}${name}.worker.js`);
  },
};

const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
const toolkit = createGraphiQLFetcher({
  url: '/graphql',
  subscriptionUrl: `${scheme}//${window.location.host}/graphql`,
});

// The toolkit opens one graphql-transport-ws connection per subscription and sends the
// Headers tab as its connection_init payload. Header names are case-insensitive on HTTP but
// not in that payload: lower-case them, so `Authorization: Bearer <token>` reaches the
// service as the `authorization` entry it reads, whatever the spelling in the tab.
function fetcher(params, options) {
  const headers = {};
  for (const [name, value] of Object.entries(options?.headers ?? {})) {
    headers[name.toLowerCase()] = value;
  }
  return toolkit(params, { ...options, headers });
}

// A `query` (and `variables`, `operationName`) in the page's URL fills the editors.
const url = new URLSearchParams(window.location.search);
const props = {};
if (url.get('query')) props.initialQuery = url.get('query');
if (url.get('variables')) props.initialVariables = url.get('variables');
if (url.get('operationName')) props.operationName = url.get('operationName');

const root = createRoot(document.getElementById('graphiql'));
root.render(
  <GraphiQL
    fetcher={fetcher}
    plugins={[explorerPlugin()]}
    defaultQuery={'# Send `Authorization: Bearer <token>` in the Headers tab below.\n{\n  me {\n    id\n    displayName\n  }\n}\n'}
    {...props}
  />,
);
