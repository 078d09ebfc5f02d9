// A stand-in for an auth provider's SDK (the README's "./auth.js"): HS256 tokens for the
// role web_user, signed with the server's plank.jwt_secret.
import { createHmac } from "node:crypto";

function mintJwt(claims, secret) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

export const auth = {
  async getAccessToken() {
    return mintJwt({ role: "web_user", exp: Math.floor(Date.now() / 1000) + 600 }, process.env.PLANK_JWT_SECRET);
  },
};
