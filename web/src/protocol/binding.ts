/**
 * The login binding over WebSocket (docs/PROTOCOL.md §12.3). A browser cannot read
 * the TLS exporter the TCP port's proofs contain, so proofs over `/ws` contain
 * this instead: a hash of the fresh values the server's `hello` gave this
 * connection, so a proof made for one connection fails on every other.
 */
import { concat, fromBase64, fromHex, utf8, type Bytes } from "../crypto/bytes";
import { sha256 } from "../crypto/symmetric";

const LABEL = utf8("carrier-ws binding\0");

export interface HelloValues {
  challenge: string;
  connection: string;
  fingerprint: string;
}

export async function wsBinding(hello: HelloValues): Promise<Bytes> {
  const challenge = fromBase64(hello.challenge);
  const connection = fromBase64(hello.connection);
  const fingerprint = fromHex(hello.fingerprint);
  if (challenge.length !== 32 || connection.length !== 16 || fingerprint.length !== 32) throw new Error("the server's hello is malformed");
  return sha256(concat(LABEL, challenge, fingerprint, connection));
}
