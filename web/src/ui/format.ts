/** Times in the user's own time zone and language, as a messaging app shows them. */

const locale = () => (typeof navigator === "undefined" ? undefined : navigator.language);

function sameDay(a: Date, b: Date): boolean {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** A time a Date can hold; anything else (a stored record from an older version, say) shows as the epoch rather than breaking the view. */
function validDate(ms: number): Date {
  const at = new Date(ms);
  return Number.isNaN(at.getTime()) ? new Date(0) : at;
}

/** "14:05" today, "Mon 14:05" within a week, "12 Mar 14:05" this year, else with the year. */
export function messageTime(ms: number, now: Date = new Date()): string {
  const at = validDate(ms);
  const time = at.toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit" });
  if (sameDay(at, now)) return time;
  const days = (now.getTime() - at.getTime()) / 86_400_000;
  if (days < 6 && days > 0) return `${at.toLocaleDateString(locale(), { weekday: "short" })} ${time}`;
  const sameYear = at.getFullYear() === now.getFullYear();
  const date = at.toLocaleDateString(locale(), { day: "numeric", month: "short", year: sameYear ? undefined : "numeric" });
  return `${date} ${time}`;
}

/** Shorter, for the conversation list: the time today, else the date. */
export function listTime(ms: number, now: Date = new Date()): string {
  const at = validDate(ms);
  if (sameDay(at, now)) return at.toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit" });
  const days = (now.getTime() - at.getTime()) / 86_400_000;
  if (days < 6 && days > 0) return at.toLocaleDateString(locale(), { weekday: "short" });
  return at.toLocaleDateString(locale(), { day: "numeric", month: "short" });
}

/** For `<time datetime>`: the instant, unambiguous. */
export function isoTime(ms: number): string {
  return validDate(ms).toISOString();
}

/** Two letters for an avatar: the last two digits of the number. */
export function initials(phone: string): string {
  return phone.slice(-2);
}
