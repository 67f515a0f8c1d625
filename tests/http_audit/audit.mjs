// Runs graphql-http's GraphQL-over-HTTP server audits against one URL and prints one JSON
// line: [{id, name, status, reason?}], status being "ok", or "error" (a failed MUST),
// "warn" (a failed SHOULD) or "notice" (a failed MAY). tests/test_http_audit.py counts them.
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <graphql-url>');
  process.exit(2);
}
const results = [];
for (const audit of serverAudits({ url })) {
  const result = await audit.fn(); // throws only on a fatal (non-audit) failure
  results.push({ id: result.id, name: result.name, status: result.status,
                 reason: result.reason });
}
console.log(JSON.stringify(results));
