// Drives the official @segment/analytics-node client against a gateway, for tests/test_clients.py.
//
// Usage: node send.mjs <gateway-url> <write-key> <scenario>
//   (or GATEWAY_URL, GATEWAY_WRITE_KEY, GATEWAY_SCENARIO in the environment)
//
// Scenarios:
//   calls  one identify, track, page, screen, group and alias, then closeAndFlush()
//   big    40 track events of about 28 KB each, sent as a single batch of more than 1 MB
//
// Prints one JSON object on stdout:
//   {"sent": [{"type", "messageId", "error"}...], "requests": [{"url", "status", "bytes"}...],
//    "errors": [...]}
// "sent" lists every call with the messageId the client generated, and the delivery error the
// client reported for it (null when delivered). "requests" lists the HTTP requests the client
// made, as seen by a pass-through wrapper around fetch (the transport the client uses anyway).

import { Analytics } from '@segment/analytics-node'

const [url, writeKey, scenario] = [
  process.argv[2] ?? process.env.GATEWAY_URL,
  process.argv[3] ?? process.env.GATEWAY_WRITE_KEY,
  process.argv[4] ?? process.env.GATEWAY_SCENARIO ?? 'calls',
]
if (!url || !writeKey) {
  console.error('usage: node send.mjs <gateway-url> <write-key> [calls|big]')
  process.exit(2)
}

const requests = []
const errors = []

async function recordingFetch(resource, init) {
  const bytes = init?.body == null ? 0 : Buffer.byteLength(init.body)
  try {
    const response = await globalThis.fetch(resource, init)
    requests.push({ url: String(resource), status: response.status, bytes })
    return response
  } catch (error) {
    requests.push({ url: String(resource), status: null, bytes, error: String(error) })
    throw error
  }
}

const BIG_EVENTS = 40
const BIG_PROPERTY_CHARS = 28 * 1024

const analytics = new Analytics({
  writeKey,
  host: url,
  httpClient: recordingFetch,
  maxRetries: 2,
  // One batch for the whole scenario, sent by closeAndFlush(), never by the timer.
  flushAt: scenario === 'big' ? BIG_EVENTS : 15,
  flushInterval: 30000,
})
analytics.on('error', (error) => {
  errors.push({ code: error?.code ?? null, reason: String(error?.reason ?? error?.message ?? error) })
})

const sent = []
function recorder(type) {
  const entry = { type, messageId: null, error: null }
  sent.push(entry)
  return (error, ctx) => {
    entry.messageId = ctx?.event?.messageId ?? null
    entry.error = error ? String(error?.reason ?? error?.message ?? error) : null
  }
}

const userId = 'node-user-1'
if (scenario === 'calls') {
  analytics.identify({ userId, traits: { email: 'node@example.com', plan: 'pro' } }, recorder('identify'))
  analytics.track({ userId, event: 'Order Completed', properties: { revenue: 42.5, currency: 'EUR' } }, recorder('track'))
  analytics.page({ userId, category: 'Docs', name: 'Quickstart', properties: { path: '/docs/quickstart' } }, recorder('page'))
  analytics.screen({ anonymousId: 'node-anon-1', category: 'Onboarding', name: 'Welcome' }, recorder('screen'))
  analytics.group({ userId, groupId: 'node-group-1', traits: { name: 'Acme', employees: 12 } }, recorder('group'))
  analytics.alias({ userId, previousId: 'node-anon-1' }, recorder('alias'))
} else if (scenario === 'big') {
  // 'x' is neither %-escaped nor an 'i', so the client's size guard (which counts only those)
  // lets the whole 1.2 MB through as one batch, as it does for real users.
  const filler = 'x'.repeat(BIG_PROPERTY_CHARS)
  for (let n = 0; n < BIG_EVENTS; n++) {
    analytics.track({ userId, event: 'Big Event', properties: { n, filler } }, recorder('track'))
  }
} else {
  console.error(`unknown scenario ${scenario}`)
  process.exit(2)
}

await analytics.closeAndFlush({ timeout: 45000 })
process.stdout.write(JSON.stringify({ sent, requests, errors }) + '\n')
