// What the sign-in page needs without the SDK: reading a token's claims, the dev sign-in call.

export class HubError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.code = code;
    this.status = status;
  }
}

export function decodeToken(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    if (typeof claims.sub !== 'string' || typeof claims.role !== 'string') return null;
    return { user: claims.sub, role: claims.role, tenant: claims.tenant || 'default', exp: claims.exp };
  } catch {
    return null;
  }
}

export async function devToken(user, role, tenant) {
  const res = await fetch('/api/dev/token', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, role, tenant: tenant || 'default' }) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new HubError((data.error || {}).code || 'error', (data.error || {}).message || res.statusText);
  return data.token;
}
