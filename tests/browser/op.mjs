// A real OpenID Connect provider for the browser tests: the `oidc-provider`
// package (the certified Node.js implementation) with its built-in
// development login form, on a loopback port. Sluice signs in against it
// exactly as against an institution's provider: discovery, authorization
// code with PKCE, code exchange, ID token checked against the published keys.
//
//   node op.mjs PORT REDIRECT_URI     (prints "ready ISSUER" when listening)
import Provider from 'oidc-provider';

const [port, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

// Who may sign in, and the claims Sluice maps to roles, groups and organisation.
const accounts = {
  'carol@uni.example': { roles: ['researcher'], groups: [], organisation: 'University of Example' },
  'ada@sluice.example': { roles: ['admin', 'steward'], groups: [], organisation: 'Example Health Data Service' },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'sluice',
    client_secret: 'sluice-browser-test-secret',
    redirect_uris: [redirectUri],
    // Sluice's front page, where signing out at the provider comes back to.
    post_logout_redirect_uris: [new URL('/', redirectUri).href],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  scopes: ['openid', 'sluice'],
  claims: { openid: ['sub'], sluice: ['roles', 'groups', 'organisation'] },
  // As OpenID Connect Core has it, the claims of the scopes asked for are
  // not in the ID token but at the userinfo endpoint, which Sluice reads.
  conformIdTokenClaims: true,
  pkce: { required: () => true },
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
provider.listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));
