/** Calls to `/api/v1` with the API key of this browser session, when the server wants one. */

const KEY_STORAGE = "smartcity.apiKey";
export const KEY_HEADER = "X-API-Key";

/** The server answered 401: the key is missing or wrong. */
export class Unauthorized extends Error {}

export function rememberKey(key: string): void {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function authHeaders(): Record<string, string> {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key === null ? {} : { [KEY_HEADER]: key };
}

export function apiUrl(path: string, params: Record<string, string | number> = {}): string {
  const url = new URL(`/api/v1/${path}`, window.location.origin);
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, String(value));
  return url.toString();
}

export async function getJson<T>(
  path: string,
  params: Record<string, string | number> = {},
): Promise<T> {
  const response = await fetch(apiUrl(path, params), {
    headers: { Accept: "application/json", ...authHeaders() },
  });
  if (response.status === 401) throw new Unauthorized(path);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`${path}: ${response.status} ${body.detail ?? response.statusText}`);
  }
  return (await response.json()) as T;
}
