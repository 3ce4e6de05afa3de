// Which pools can hold block images: healthy and tagged with the rbd application (the Images page's prerequisite).

import type { Pool } from '../api/types';

export function isRbdPool(pool: Pool): boolean {
  return pool.application_metadata.includes('rbd');
}

export function isUsableRbdPool(pool: Pool): boolean {
  return isRbdPool(pool) && pool.health === 'OK';
}
