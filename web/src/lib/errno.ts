// Error codes in words: the API gives errno names (EACCES) or, in Ceph's model, errno numbers as strings ("13").
// People read the words; the code stays available on a details line for reports and searches.

const CODES: [name: string, num: number, words: string][] = [
  ['EPERM', 1, 'Not permitted'],
  ['ENOENT', 2, 'Not found'],
  ['EIO', 5, 'Input/output error'],
  ['EAGAIN', 11, 'Try again later'],
  ['ENOMEM', 12, 'Out of memory'],
  ['EACCES', 13, 'Permission denied'],
  ['EBUSY', 16, 'In use'],
  ['EEXIST', 17, 'Already exists'],
  ['EXDEV', 18, 'Crosses pools or namespaces'],
  ['ENODEV', 19, 'No such device'],
  ['EINVAL', 22, 'Invalid request'],
  ['EFBIG', 27, 'Too large'],
  ['ENOSPC', 28, 'No space left'],
  ['EROFS', 30, 'Read-only'],
  ['EDOM', 33, 'Out of range'],
  ['ERANGE', 34, 'Out of range'],
  ['ENAMETOOLONG', 36, 'Name too long'],
  ['ENOSYS', 38, 'Not supported'],
  ['ENOTEMPTY', 39, 'Not empty'],
  ['ELOOP', 40, 'Loop'],
  ['EDQUOT', 122, 'Quota exceeded'],
  ['ENOTSUP', 95, 'Not supported'],
  ['EOPNOTSUPP', 95, 'Not supported'],
  ['ETIMEDOUT', 110, 'Timed out'],
  ['ECANCELED', 125, 'Cancelled'],
  ['EUNAUTHORIZED', 0, 'Not logged in'],
];

const HTTP: Record<string, string> = {
  '400': 'Invalid request',
  '401': 'Not logged in',
  '403': 'Permission denied',
  '404': 'Not found',
  '409': 'Conflict',
  '413': 'Too large',
  '429': 'Too many requests',
  '500': 'Server error',
  '503': 'Unavailable',
  '507': 'No space left',
};

export interface CodeWords {
  /** What the code means: `Permission denied`. */
  words: string;
  /** The code as given, with the other form when known: `EACCES (errno 13)`. */
  details: string;
}

/** The words for an error code, and the code itself for the details line. */
export function describeCode(code: string, status?: number): CodeWords {
  const c = code.trim();
  const byName = CODES.find(([name]) => name === c.toUpperCase());
  const byNum = /^-?\d+$/.test(c) ? CODES.find(([, num]) => num === Math.abs(Number(c)) && num !== 0) : undefined;
  const hit = byName ?? byNum;
  if (hit) {
    const [name, num, words] = hit;
    return { words, details: num > 0 ? `${name} (errno ${num})` : name };
  }
  const http = HTTP[c] ?? (status !== undefined ? HTTP[String(status)] : undefined);
  return { words: http ?? 'Error', details: c || (status !== undefined ? `HTTP ${status}` : 'no code') };
}
