// The time range chosen on a performance tab, shared by the overall and per-image tabs for the browser session, so
// drilling from the overall charts into an image keeps the window being looked at.

import { DEFAULT_RANGE, rangeById, type PerfRange } from '../lib/perf';
import { createStore } from './store';

const KEY = 'basalt.perfRange';

function stored(): PerfRange {
  try {
    return rangeById(sessionStorage.getItem(KEY));
  } catch {
    return DEFAULT_RANGE;
  }
}

export const perfRange = createStore<PerfRange>(stored());

perfRange.subscribe((range) => {
  try {
    sessionStorage.setItem(KEY, range.id);
  } catch {
    // Storage refused (private mode): the choice lasts for this page only.
  }
});
