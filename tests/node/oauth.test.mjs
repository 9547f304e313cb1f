// Keyhold's HTTP endpoints through clients nobody here wrote. Started by
// tests/e2e/test_node_clients.py with a running Keyhold whose issuer is its HTTP base
// URL, and a service account allowed `audit.read`.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { createRemoteJWKSet, jwtVerify } from 'jose'
import * as client from 'openid-client'

const issuer = process.env.KEYHOLD_ISSUER
const clientId = process.env.KEYHOLD_CLIENT_ID
const clientSecret = process.env.KEYHOLD_CLIENT_SECRET
// Loopback plain http in the test only; openid-client refuses it unless told.
const insecure = { execute: [client.allowInsecureRequests] }

test('openid-client discovers the issuer and runs the client-credentials grant', async () => {
  const config = await client.discovery(new URL(issuer), clientId, clientSecret, undefined, insecure)
  assert.equal(config.serverMetadata().issuer, issuer)
  const tokens = await client.clientCredentialsGrant(config, { scope: 'audit.read' })
  assert.equal(tokens.token_type.toLowerCase(), 'bearer')
  assert.equal(tokens.scope, 'audit.read')
  assert.ok(tokens.expires_in > 0)
})

test('jose verifies a Keyhold token with the keys the discovery document names', async () => {
  const config = await client.discovery(new URL(issuer), clientId, clientSecret, undefined, insecure)
  const { access_token: token } = await client.clientCredentialsGrant(config)
  const keys = createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri))
  const { payload, protectedHeader } = await jwtVerify(token, keys, {
    issuer,
    audience: 'keyhold',
  })
  assert.equal(protectedHeader.alg, 'ES256')
  assert.match(payload.sub, /^service-accounts\//)
  await assert.rejects(jwtVerify(token, keys, { issuer, audience: 'reports.internal' }), {
    code: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
  })
})

test('a wrong secret is refused as RFC 6749 says', async () => {
  const config = await client.discovery(new URL(issuer), clientId, 'khs_wrong', undefined, insecure)
  await assert.rejects(client.clientCredentialsGrant(config), (error) => {
    assert.equal(error.error, 'invalid_client')
    return true
  })
})
