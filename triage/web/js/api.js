// The API: the key from localStorage on every request; errors as readable messages.

export const KEY_NAME = "sigstream-api-key";
export const key = () => localStorage.getItem(KEY_NAME) || "";

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, options = {}) {
  const headers = { "X-API-Key": key(), ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const resp = await fetch(path, { ...options, headers });
  const body = resp.headers.get("content-type")?.includes("json") ? await resp.json() : {};
  if (!resp.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? resp.statusText);
    throw new ApiError(resp.status, detail);
  }
  return body;
}
