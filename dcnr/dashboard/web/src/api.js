// The orchestrator's JSON API (under /api, beside this page on its --http-port), and the token the viewer pasted.
// Paths are relative, so the dashboard also works behind a proxy that serves it under a prefix.

const TOKEN_KEY = 'dcnr.token'; // sessionStorage: gone when the tab closes
const TIMEOUT_MS = 10000; // every request is bounded

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value.trim());
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status; // 0: the orchestrator could not be reached
  }
}

async function call(method, path) {
  const headers = { Accept: 'application/json' };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch(path, { method, headers, cache: 'no-store', signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (err) {
    throw new ApiError(0, `the orchestrator did not answer (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const why = body && typeof body.error === 'string' ? body.error : response.statusText;
    throw new ApiError(response.status, `${response.status}: ${why}`);
  }
  return body;
}

export const get = (path) => call('GET', path);
export const post = (path) => call('POST', path);
export const enc = encodeURIComponent;
