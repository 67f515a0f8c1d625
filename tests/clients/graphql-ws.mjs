// graphql-ws's own client: every operation over the one WebSocket (graphql-transport-ws), the token
// in connectionParams. Results are plain { data, errors }; an operation the service refuses ends
// with a result carrying `errors`, then complete. Scenario: `realtime` (common.mjs).
import { EVENTS, assistant, described, realtime, run, wsClient } from './common.mjs';

const errorsOf = (errors) => (errors?.length ? described({ name: 'errors' }, errors) : null);

function connect(token, wsOptions = {}) {
  const ws = wsClient(token, wsOptions);
  const once = (query, variables) => new Promise((resolve) => {
    let last = {};
    ws.client.subscribe({ query, variables }, {
      next: (result) => { last = result; },
      error: (error) => resolve({ data: null, error: described(error, [error].flat()) }),
      complete: () => resolve({ data: last.data ?? null, error: errorsOf(last.errors) }),
    });
  });
  return {
    ws,
    query: once,
    mutate: once,
    subscribe: (variables, onEvent, onErrors) => ws.client.subscribe(
      { query: EVENTS, variables },
      {
        next: (result) => (result.errors ? onErrors(errorsOf(result.errors))
                                         : onEvent(result.data.roomEvents)),
        error: (error) => onErrors(described(error, [error].flat())),
        complete: () => {},
      },
    ),
  };
}

run({ realtime: () => realtime(connect), assistant: () => assistant(connect) });
