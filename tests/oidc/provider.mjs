// A real OpenID Connect provider for the sign-in tests (tests/tests/oidc.rs):
// panva's oidc-provider (OpenID Certified), configured as a company's
// identity provider would be for Dimmer. Everything it needs comes from the
// environment; it prints one line `ready ISSUER` when it listens.
//
//   PORT          where it listens on 127.0.0.1
//   REDIRECT_URI  the controller's /auth/callback (the `dimmer` web client)
//   KEYS_DIR      its signing keys, one JWK per file; KEY_IDS (comma
//                 separated) says which it publishes, the first signs.
//                 A key not in the directory is made and kept there, so
//                 a restart with `new,old` rotates while old tokens verify.
//   ID_TOKEN_TTL  seconds an ID token lives (default 600)
//   ACCOUNT_GROUPS JSON: login name -> its groups, e.g. {"alice": ["sre"]}
//
// People sign in on a plain form (POST login=NAME to the interaction): who
// they are is all the tests need; the provider does the rest (PKCE, the
// device flow, ID tokens, JWKS) as it does in production.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const groups = JSON.parse(process.env.ACCOUNT_GROUPS || '{}');
const keysDir = process.env.KEYS_DIR;
const keyIds = (process.env.KEY_IDS || 'k1').split(',');

function key(kid) {
  const file = path.join(keysDir, `${kid}.json`);
  if (!fs.existsSync(file)) {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
    fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

async function loadGrant(op, clientId, accountId) {
  const grant = new op.Grant({ clientId, accountId });
  grant.addOIDCScope('openid profile email groups');
  grant.addOIDCClaims(['sub', 'name', 'preferred_username', 'email', 'groups']);
  return grant;
}

const client = (id, extra) => ({
  client_id: id,
  token_endpoint_auth_method: 'none',
  ...extra,
});

const provider = new Provider(issuer, {
  clients: [
    client('dimmer', {
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }),
    client('dimmer-cli', {
      application_type: 'native',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
      response_types: [],
      redirect_uris: [],
    }),
    // Another application of the same company: its ID tokens are not
    // for Dimmer (the wrong audience).
    client('wiki', {
      application_type: 'native',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
      response_types: [],
      redirect_uris: [],
    }),
  ],
  jwks: { keys: keyIds.map(key) },
  cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  // The groups go in the ID token itself: Dimmer reads no userinfo.
  conformIdTokenClaims: false,
  ttl: { IdToken: Number(process.env.ID_TOKEN_TTL || 600), DeviceCode: 300 },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: id, preferred_username: id, email: `${id}@example.com`, groups: groups[id] || [] };
      },
    };
  },
  // The company has approved Dimmer for everyone: no consent screen.
  async loadExistingGrant(ctx) {
    const grant = await loadGrant(ctx.oidc.provider, ctx.oidc.client.clientId, ctx.oidc.session.accountId);
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});

async function formBody(req) {
  let text = '';
  for await (const chunk of req) text += chunk;
  return new URLSearchParams(text);
}

provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([\w-]+)$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.prompt.name === 'consent') {
    // Approved for everyone (native clients are asked every time by default).
    const grant = await loadGrant(provider, details.params.client_id, details.session.accountId);
    return provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId: await grant.save() } }, {
      mergeWithLastSubmission: true,
    });
  }
  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>Sign in</title>
<form method="post" action="/interaction/${details.uid}">
<input name="login" autofocus required><button>Sign in</button></form>`;
    return undefined;
  }
  const form = await formBody(ctx.req);
  const login = form.get('login');
  if (!login || !/^[\w.-]{1,40}$/.test(login)) {
    ctx.status = 400;
    ctx.body = 'login: a name';
    return undefined;
  }
  return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: login } }, {
    mergeWithLastSubmission: false,
  });
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
