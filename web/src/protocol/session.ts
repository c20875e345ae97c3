/**
 * A session between two devices (docs/PROTOCOL.md §14.2–§14.4): PQXDH to set it
 * up, the Double Ratchet to run it, one signed envelope per message.
 *
 * Functions take a state and return a new one; the caller commits the new state
 * to storage before an envelope leaves or a message is acknowledged (§15), and
 * checks the envelope's signature (`verifyEnvelope`) before calling `openMessage`.
 */
import { concat, equal, type Bytes } from "../crypto/bytes";
import { generateAgreementKey, type AgreementKey } from "../crypto/p256";
import { aesGcmOpen, aesGcmSeal } from "../crypto/symmetric";
import { envelopeHead, finishEnvelope, type Envelope } from "./envelope";
import { pad, unpad, type Payload } from "./padding";
import { initiate, respond, type Party, type ResponderPrekeys, type SetUp } from "./pqxdh";
import { initiatorState, messageEncryption, nextSendingKey, receive, responderState, type RatchetState } from "./ratchet";
import type { PrekeyChoice } from "./statements";

export interface SessionState {
  sessionHash: Bytes;
  sessionId: Bytes;
  own: Party;
  peer: Party;
  createdAt: number;
  /** The initiator repeats the set-up in every envelope until it opens one from the peer. */
  pending: SetUp | null;
  ratchet: RatchetState;
}

export class SessionError extends Error {
  constructor(readonly code: "wrong_session" | "wrong_recipient") {
    super(code === "wrong_session" ? "the envelope belongs to another session" : "the envelope is for another device");
    this.name = "SessionError";
  }
}

const address = (p: Party) => ({ phone: p.phone, deviceId: p.deviceId });
const party = (p: Party): Party => ({ phone: p.phone, deviceId: p.deviceId, identity: p.identity });

/** Starts a session to a peer device from its verified bundle and claim. */
export async function initiateSession(
  own: Party & { agree: CryptoKey },
  peer: Party,
  choice: PrekeyChoice,
  fixed: { ephemeral?: AgreementKey; kemRandomness?: Bytes; now?: number } = {},
): Promise<SessionState> {
  const ephemeral = fixed.ephemeral ?? (await generateAgreementKey());
  const { agreement, setUp } = await initiate(own, peer, choice, ephemeral, fixed.kemRandomness);
  return {
    sessionHash: agreement.sessionHash,
    sessionId: agreement.sessionId,
    own: party(own),
    peer: party(peer),
    createdAt: fixed.now ?? Date.now(),
    pending: setUp,
    ratchet: initiatorState(agreement.rootKey, choice.signedPrekey.key),
  };
}

/** Sets up the responder's side from a prekey envelope whose signature has been checked. */
export async function acceptSession(own: Party & { agree: CryptoKey }, peer: Party, envelope: Envelope, keys: ResponderPrekeys, now = Date.now()): Promise<SessionState> {
  if (!envelope.setUp) throw new SessionError("wrong_session");
  const agreement = await respond(own, peer, keys, envelope.setUp);
  if (!equal(agreement.sessionId, envelope.sessionId)) throw new SessionError("wrong_session");
  return {
    sessionHash: agreement.sessionHash,
    sessionId: agreement.sessionId,
    own: party(own),
    peer: party(peer),
    createdAt: now,
    pending: null,
    ratchet: responderState(agreement.rootKey, keys.signedPrekey),
  };
}

/** Seals one message; save the returned state before sending the envelope. */
export async function sealMessage(
  state: SessionState,
  id: Bytes,
  payload: Payload,
  deviceSignKey: CryptoKey,
  newRatchetKey?: () => Promise<AgreementKey>,
): Promise<{ state: SessionState; envelope: Bytes }> {
  const padded = pad(payload);
  const step = await nextSendingKey(state.ratchet, newRatchetKey);
  const head = envelopeHead(
    { id, sessionId: state.sessionId, sender: address(state.own), recipient: address(state.peer), setUp: state.pending, header: step.header },
    padded.length + 16,
  );
  const { key, nonce } = await messageEncryption(step.messageKey);
  const ciphertext = await aesGcmSeal(key, nonce, padded, concat(state.sessionHash, head));
  return { state: { ...state, ratchet: step.state }, envelope: await finishEnvelope(head, ciphertext, deviceSignKey) };
}

/** Opens an envelope of this session; on any failure the state is unchanged (the caller keeps the old one). */
export async function openMessage(state: SessionState, envelope: Envelope, now = Date.now()): Promise<{ state: SessionState; payload: Payload }> {
  if (!equal(envelope.sessionId, state.sessionId)) throw new SessionError("wrong_session");
  if (envelope.recipient.phone !== state.own.phone || envelope.recipient.deviceId !== state.own.deviceId) throw new SessionError("wrong_recipient");
  const aad = concat(state.sessionHash, envelope.authenticated);
  const { state: ratchet, value } = await receive(
    state.ratchet,
    envelope.header,
    async (messageKey) => {
      const { key, nonce } = await messageEncryption(messageKey);
      return unpad(await aesGcmOpen(key, nonce, envelope.ciphertext, aad));
    },
    now,
  );
  return { state: { ...state, ratchet, pending: null }, payload: value };
}
