/**
 * This device's prekeys (docs/PROTOCOL.md §10.4): a signed prekey and a
 * last-resort ML-KEM prekey rotated every 7 days and kept 30 days after, and
 * pools of one-time keys topped up against what the server still holds. Every
 * private half is saved before its public half is published; the P-256 ones are
 * non-extractable CryptoKeys, the ML-KEM ones 64-byte seeds (WebCrypto has no
 * ML-KEM).
 */
import { toBase64, toHex, type Bytes } from "../../crypto/bytes";
import { kemKeyPair } from "../../crypto/mlkem";
import { generateAgreementKey, sign } from "../../crypto/p256";
import { sha256 } from "../../crypto/symmetric";
import type { ResponderPrekeys, SetUp } from "../../protocol/pqxdh";
import { encodePrekey, PrekeyKind, prekeyStatement } from "../../protocol/statements";
import type { KeyRecord, PrekeysUsed } from "../../storage/store";
import type { Context } from "./context";

export const ROTATE_AFTER_MS = 7 * 24 * 3600 * 1000;
export const RETAIN_REPLACED_MS = 30 * 24 * 3600 * 1000;
const ONE_TIME_BATCH = 100;
const ONE_TIME_LOW = 25;
const KEM_ONE_TIME_BATCH = 40;
const KEM_ONE_TIME_LOW = 10;
const MAX_HELD_BATCHES = 4;
/**
 * Set-ups that used neither one-time key are remembered by their base key, with
 * the signed prekey they used, so a replayed prekey message cannot set up a
 * session twice (PROTOCOL §10.4, last row); at most this many per signed
 * prekey, after which such set-ups are refused until the next rotation.
 */
export const MAX_SEEN_BASE_KEYS = 4096;
/** A `publish_prekeys` frame stays well under the 128 KiB request limit. */
const PUBLISH_BYTES = 90_000;

const PREFIX = "prekey:";
const NEXT = "prekey-next";
const nameOf = (id: number) => `${PREFIX}${id}`;

/** Rotates and tops up, saves, then publishes what is new. */
export async function maintainPrekeys(ctx: Context, now = Date.now()): Promise<void> {
  const held = await ctx.store.keys(PREFIX);
  let next = (await ctx.store.key(NEXT))?.next ?? 1;
  const fresh: KeyRecord[] = [];
  const changed: KeyRecord[] = [];
  const remove: string[] = [];
  const make = async (kind: PrekeyKind): Promise<void> => {
    const id = next++;
    if (kind === PrekeyKind.Signed || kind === PrekeyKind.OneTime) {
      const key = await generateAgreementKey();
      fresh.push({ name: nameOf(id), kind, id, agree: key.agree, publicKey: key.point, createdAt: now });
    } else {
      const pair = kemKeyPair();
      fresh.push({ name: nameOf(id), kind, id, seed: pair.seed, publicKey: pair.publicKey, createdAt: now });
    }
  };

  for (const kind of [PrekeyKind.Signed, PrekeyKind.KemLastResort]) {
    const current = held.filter((k) => k.kind === kind && k.replacedAt === undefined);
    const newest = current.sort((a, b) => b.createdAt - a.createdAt)[0];
    if (!newest || now - newest.createdAt >= ROTATE_AFTER_MS) {
      for (const old of current) changed.push({ ...old, replacedAt: now });
      await make(kind);
    }
  }
  for (const old of held) {
    if (old.replacedAt !== undefined && now - old.replacedAt >= RETAIN_REPLACED_MS) remove.push(old.name);
  }

  const pools = await ctx.request("publish_prekeys", { prekeys: [] });
  const topUp = async (kind: PrekeyKind, onServer: number, low: number, batch: number) => {
    if (onServer >= low) return;
    for (let i = onServer; i < batch; i++) await make(kind);
    const all = held.filter((k) => k.kind === kind).sort((a, b) => a.id! - b.id!);
    const excess = all.length + (batch - onServer) - MAX_HELD_BATCHES * batch;
    for (const old of all.slice(0, Math.max(0, excess))) remove.push(old.name);
  };
  await topUp(PrekeyKind.OneTime, Number(pools.one_time ?? 0), ONE_TIME_LOW, ONE_TIME_BATCH);
  await topUp(PrekeyKind.KemOneTime, Number(pools.kem_one_time ?? 0), KEM_ONE_TIME_LOW, KEM_ONE_TIME_BATCH);
  if (fresh.length === 0 && remove.length === 0 && changed.length === 0) return;

  await ctx.store.saveKeys([...fresh, ...changed, { name: NEXT, next, createdAt: now }], remove);
  let batch: string[] = [];
  let size = 0;
  for (const key of fresh) {
    const body = { kind: key.kind!, id: key.id!, createdAt: key.createdAt, key: key.publicKey! };
    const encoded = toBase64(encodePrekey({ ...body, signature: await sign(ctx.me.sign, prekeyStatement(body)) }));
    if (size + encoded.length > PUBLISH_BYTES || batch.length === 200) {
      await ctx.request("publish_prekeys", { prekeys: batch });
      batch = [];
      size = 0;
    }
    batch.push(encoded);
    size += encoded.length + 3;
  }
  if (batch.length) await ctx.request("publish_prekeys", { prekeys: batch });
}

/** Why a set-up that names prekeys this device holds is refused all the same. */
export class SetUpRefused extends Error {
  constructor(readonly code: "replay" | "exhausted") {
    super(code === "replay" ? "a replayed set-up: its base key was used before with no one-time key" : "too many set-ups without a one-time key on this signed prekey; refused until it is rotated");
    this.name = "SetUpRefused";
  }
}

/** The SHA-256 of a base key (EK_A), as it is remembered: hex. */
export async function baseKeyDigest(ephemeral: Bytes): Promise<string> {
  return toHex(await sha256(ephemeral));
}

/**
 * The private prekeys a set-up names, and what the session it opens uses up
 * (committed with that session); null when one is gone (the message cannot
 * open). A set-up with neither one-time key whose base key was seen before is
 * refused by construction (`SetUpRefused`), whatever its message id.
 */
export async function responderPrekeys(ctx: Context, setUp: SetUp): Promise<{ keys: ResponderPrekeys; used: PrekeysUsed } | null> {
  const find = async (id: number, kinds: PrekeyKind[]): Promise<KeyRecord | null> => {
    const key = await ctx.store.key(nameOf(id));
    return key && kinds.includes(key.kind!) ? key : null;
  };
  const signed = await find(setUp.signedPrekeyId, [PrekeyKind.Signed]);
  const kem = await find(setUp.kemPrekeyId, [PrekeyKind.KemLastResort, PrekeyKind.KemOneTime]);
  const oneTime = setUp.oneTimePrekeyId ? await find(setUp.oneTimePrekeyId, [PrekeyKind.OneTime]) : null;
  if (!signed?.agree || !kem?.seed || (setUp.oneTimePrekeyId && !oneTime?.agree)) return null;
  const remove = [oneTime?.name, kem.kind === PrekeyKind.KemOneTime ? kem.name : undefined].filter((n): n is string => !!n);
  const used: PrekeysUsed = { remove };
  if (remove.length === 0) {
    const baseKey = await baseKeyDigest(setUp.ephemeral);
    const seen = signed.seenBaseKeys ?? [];
    if (seen.includes(baseKey)) throw new SetUpRefused("replay");
    if (seen.length >= MAX_SEEN_BASE_KEYS) throw new SetUpRefused("exhausted");
    used.remember = { signedPrekey: signed.name, baseKey };
  }
  return {
    used,
    keys: {
      signedPrekey: { id: signed.id!, agree: signed.agree, point: signed.publicKey! },
      oneTimePrekey: oneTime ? { id: oneTime.id!, agree: oneTime.agree!, point: oneTime.publicKey! } : null,
      kemPrekey: { id: kem.id!, seed: kem.seed as Bytes, publicKey: kem.publicKey! },
    },
  };
}
