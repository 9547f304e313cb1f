// Keyhold over gRPC from Node, with the generated contracts (../gen) and
// @connectrpc/connect's gRPC transport. Started by tests/e2e/test_typescript_client.py
// with a running Keyhold and a service account allowed `audit.read`.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createGrpcTransport } from '@connectrpc/connect-node'

import { ErrorInfoSchema } from '../gen/google/rpc/error_details_pb.js'
import { IdentityService, SubjectType } from '../gen/keyhold/identity/v1/identity_service_pb.js'

const transport = createGrpcTransport({ baseUrl: `http://${process.env.KEYHOLD_ADDRESS}` })
const identity = createClient(IdentityService, transport)
const clientId = process.env.KEYHOLD_CLIENT_ID
const clientSecret = process.env.KEYHOLD_CLIENT_SECRET

test('CreateServiceToken, then WhoAmI with the token', async () => {
  const issued = await identity.createServiceToken({ clientId, clientSecret, scopes: ['audit.read'] })
  assert.deepEqual(issued.scopes, ['audit.read'])
  assert.equal(issued.audience, 'keyhold')
  const me = await identity.whoAmI({}, { headers: { authorization: `Bearer ${issued.accessToken}` } })
  assert.match(me.subject, /^service-accounts\//)
  assert.equal(me.subjectType, SubjectType.SERVICE)
  assert.deepEqual(me.scopes, ['audit.read'])
})

test("a refusal carries its ErrorInfo reason", async () => {
  await assert.rejects(identity.createServiceToken({ clientId, clientSecret: 'khs_wrong' }), (error) => {
    assert.ok(error instanceof ConnectError)
    assert.equal(error.code, Code.Unauthenticated)
    const [info] = error.findDetails(ErrorInfoSchema)
    assert.equal(info.reason, 'INVALID_CLIENT')
    assert.equal(info.domain, 'keyhold.identity')
    return true
  })
})
