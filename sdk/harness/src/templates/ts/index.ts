/**
 * CONNECTOR_NAME — a Switchboard connector, in TypeScript.
 *
 * POSTs each event's payload, verbatim, to `config.url` with the headers of
 * SPEC §4.5 (`Idempotency-Key`, `X-Switchboard-Event`, `X-Switchboard-Type`)
 * and classifies the answer: 2xx done; 408, 429, 5xx, connect errors and
 * timeouts retry (honouring `Retry-After`); any other status rejects with
 * the status and the start of the body. Change `deliver` to speak your
 * system's API; the SDK is in `switchboard/src/index.ts`.
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
    name: 'CONNECTOR_NAME',
    version: VERSION,
    config: [{ name: 'url', required: true, description: 'http(s) URL the payload is POSTed to' }],
  }),

  deliver(d) {
    const resp = http.post(config.require('url'), {
      headers: { ...deliveryHeaders(d), 'user-agent': `CONNECTOR_NAME/${VERSION}` },
      jsonText: d.payload,
    });
    return outcomeFromStatus(resp);
  },
});
