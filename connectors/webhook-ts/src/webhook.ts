/**
 * The `webhook` connector (SPEC §4.5), in TypeScript.
 *
 * POSTs the event payload, verbatim, as the JSON body to `config.url` with
 * `Idempotency-Key: <delivery id>`, `X-Switchboard-Event: <event id>` and
 * `X-Switchboard-Type: <event type>` (and `User-Agent:
 * switchboard-webhook-ts/<version>`). 2xx → done; 408, 429, 5xx, connect
 * errors and timeouts → retry (honouring `Retry-After`); any other status →
 * reject with the status and the start of the body. Credentials, if any, are
 * injected by the host as secret headers; this code never sees them.
 */

import {
  config,
  defineConnector,
  deliveryHeaders,
  http,
  outcomeFromStatus,
} from '@switchboard/connector-sdk';

const VERSION = '0.1.0';

export const { describe, deliver } = defineConnector({
  describe: () => ({
    name: 'webhook',
    version: VERSION,
    config: [{ name: 'url', required: true, description: 'http(s) URL the payload is POSTed to' }],
  }),

  deliver(d) {
    const resp = http.post(config.require('url'), {
      headers: { ...deliveryHeaders(d), 'user-agent': `switchboard-webhook-ts/${VERSION}` },
      jsonText: d.payload,
    });
    return outcomeFromStatus(resp);
  },
});
