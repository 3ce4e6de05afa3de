// Counted nouns and the verbs that agree with them: "1 image remains", "2 images remain", "1 client has it open".

/** `1 image`, `2 images`, `0 images`; irregular plurals may be given. */
export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n.toLocaleString('en-US')} ${n === 1 ? word : many}`;
}

/** A verb agreeing with a count: `verb(1, 'has', 'have')` is `has`. */
export function verb(n: number, one: string, many: string): string {
  return n === 1 ? one : many;
}
