/**
 * Link codes (PROTOCOL §16): the code's text form, and the sealed request
 * and answer as the device that shows the code would open and make them.
 */
import { describe, expect, it } from "vitest";
import { concat, fromHex, Reader, randomBytes, toHex, utf8, Writer } from "../src/crypto/bytes";
import { generateDeviceKey, verify } from "../src/crypto/p256";
import { aesGcmOpen, aesGcmSeal } from "../src/crypto/symmetric";
import { linkKeys, openLinkResponse, parseLinkCode, sealLinkRequest } from "../src/protocol/link";

describe("link codes", () => {
  it("reads the shown form, ignoring case, spaces and dashes", () => {
    expect(toHex(parseLinkCode("77777-77777-77777-77777-777774"))).toBe("ff".repeat(16));
    expect(toHex(parseLinkCode("77777 77777 77777 77777 777774".toUpperCase()))).toBe("ff".repeat(16));
    expect(toHex(parseLinkCode("aaaaa-aaaaa-aaaaa-aaaaa-aaaaaa"))).toBe("00".repeat(16));
  });

  it("refuses what is not a code", () => {
    expect(() => parseLinkCode("77777-77777-77777-77777-77777z")).toThrow();
    expect(() => parseLinkCode("77777-77777-77777-77777-777777")).toThrow(); // non-zero trailing bits
    expect(() => parseLinkCode("abc")).toThrow();
    expect(() => parseLinkCode("11111-11111-11111-11111-111111")).toThrow();
  });

  it("seals a request the other device opens, and opens its answer", async () => {
    const phone = "+12025550101";
    const keys = await linkKeys(fromHex("00112233445566778899aabbccddeeff"));
    const device = await generateDeviceKey();
    const sealed = await sealLinkRequest(keys, phone, "Chrome on Linux", device);
    const aad = (label: string) => new Writer().bytes(utf8(label)).bytes(keys.rendezvous).prefixed(utf8(phone), 1).finish();
    const body = await aesGcmOpen(keys.key, sealed.slice(0, 12), sealed.slice(12), aad("carrier-v2 link request\0"));
    const r = new Reader(body);
    expect(new TextDecoder().decode(r.prefixed(1))).toBe("Chrome on Linux");
    expect(toHex(r.bytes(65))).toBe(toHex(device.point));
    const signed = body.slice(0, r.offset);
    const signature = r.bytes(64);
    r.end();
    expect(await verify(device.point, concat(utf8("carrier-v2 link request\0"), keys.rendezvous, signed), signature)).toBe(true);

    const answer = new Writer().prefixed(utf8("cert"), 2).prefixed(utf8("list"), 2).prefixed(utf8("pkcs8"), 2).finish();
    const nonce = randomBytes(12);
    const response = concat(nonce, await aesGcmSeal(keys.key, nonce, answer, aad("carrier-v2 link response\0")));
    const opened = await openLinkResponse(keys, phone, response);
    expect(new TextDecoder().decode(opened.list)).toBe("list");
    expect(new TextDecoder().decode(opened.accountPkcs8!)).toBe("pkcs8");
    // Sealed for another phone, or as a request, it does not open.
    await expect(openLinkResponse(keys, "+12025550102", response)).rejects.toThrow();
    await expect(openLinkResponse(keys, phone, sealed)).rejects.toThrow();
  });
});
