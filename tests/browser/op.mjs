// A real OpenID Connect provider for the browser tests: the `oidc-provider`
// package (the certified Node.js implementation) with its built-in
// development login form, on a loopback port. Sluice signs in against it
// exactly as against an institution's provider: discovery, authorization
// code with PKCE, code exchange, ID token checked against the published keys.
// It also serves the command line: a public client `sluice-cli` with the
// device authorization grant (RFC 8628) and refresh tokens, whose access
// tokens are JWTs for the resource RESOURCE carrying roles, groups and
// organisation, as Sluice's `auth.issuers` expects of Keycloak or Entra ID.
//
//   node op.mjs PORT REDIRECT_URI RESOURCE     (prints "ready ISSUER" when listening)
//
// Test controls, outside the provider's own routes:
//   POST /_test/rotate   new signing key with a new kid; the old one is removed
//   GET  /_test/stats    how often the keys (/jwks) were read
// Grants, sessions and refresh tokens are kept across a rotation: every
// Provider in the process keeps them in one store (`SharedStore`).
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const [port, redirectUri, resource] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

// Who may sign in, and the claims Sluice maps to roles, groups and organisation.
const accounts = {
  'carol@uni.example': { roles: ['researcher'], groups: [], organisation: 'University of Example' },
  'ada@sluice.example': { roles: ['admin', 'steward'], groups: [], organisation: 'Example Health Data Service' },
};

// The provider's stateful records (sessions, grants, codes, tokens) in one
// Map for the whole process, so a new Provider (a key rotation) keeps them.
const records = new Map();
class SharedStore {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const expires = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    records.set(this.key(id), { payload, expires });
    if (payload.grantId) records.set(`grant-of:${this.key(id)}`, { payload: payload.grantId, expires });
    if (payload.userCode) records.set(`userCode:${payload.userCode}`, { payload: id, expires });
    if (payload.uid) records.set(`uid:${this.model}:${payload.uid}`, { payload: id, expires });
  }
  async find(id) {
    const record = records.get(this.key(id));
    if (!record || record.expires < Date.now()) return undefined;
    return record.payload;
  }
  async findByUserCode(userCode) { return this.find(records.get(`userCode:${userCode}`)?.payload); }
  async findByUid(uid) { return this.find(records.get(`uid:${this.model}:${uid}`)?.payload); }
  async consume(id) {
    const record = records.get(this.key(id));
    if (record) record.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { records.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const [key, record] of records) {
      if (key.startsWith('grant-of:') && record.payload === grantId) {
        records.delete(key.slice('grant-of:'.length));
        records.delete(key);
      }
    }
  }
}

function signingKey(kid) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

function makeProvider(key) {
  const provider = new Provider(issuer, {
    adapter: SharedStore,
    jwks: { keys: [key] },
    clients: [{
      client_id: 'sluice',
      client_secret: 'sluice-browser-test-secret',
      redirect_uris: [redirectUri],
      // Sluice's front page, where signing out at the provider comes back to.
      post_logout_redirect_uris: [new URL('/', redirectUri).href],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }, {
      // `sluice login`: a public client, no secret, no redirect.
      client_id: 'sluice-cli',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [],
      redirect_uris: [],
    }],
    scopes: ['openid', 'offline_access', 'sluice'],
    claims: { openid: ['sub'], sluice: ['roles', 'groups', 'organisation'] },
    // As OpenID Connect Core has it, the claims of the scopes asked for are
    // not in the ID token but at the userinfo endpoint, which Sluice reads.
    conformIdTokenClaims: true,
    pkce: { required: () => true },
    features: {
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        async getResourceServerInfo(ctx, indicator) {
          if (indicator !== resource) throw new errors.InvalidTarget();
          return {
            scope: 'sluice',
            audience: resource,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // What Sluice reads from an API token: roles, groups, organisation.
    async extraTokenClaims(ctx, token) {
      const account = accounts[token.accountId];
      return account ? { ...account } : undefined;
    },
    async findAccount(ctx, id) {
      const account = accounts[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() { return { sub: id, ...account }; },
      };
    },
  });
  provider.on('server_error', (ctx, err) => console.error('op server_error', err));
  // Why a grant was refused (the answer says only "invalid_grant").
  provider.on('grant.error', (ctx, err) => console.error('op grant.error', err.message, err.error_detail));
  return provider;
}

let generation = 1;
let handler = makeProvider(signingKey('key-1')).callback();
const stats = { jwks: 0 };

http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/_test/rotate') {
    generation += 1;
    const kid = `key-${generation}`;
    handler = makeProvider(signingKey(kid)).callback();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ kid }));
    return;
  }
  if (req.url === '/_test/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  if (req.url.startsWith('/jwks')) stats.jwks += 1;
  handler(req, res);
}).listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));
