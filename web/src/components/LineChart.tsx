// A time-series chart drawn by uPlot: one line per series (the per-pixel average) with a band from its minimum to its
// maximum, a value axis from 0 with its unit, local time with dates (the zone is named under the chart), a cursor
// synchronised with the page's other charts and a readout of the hovered time, a legend with the latest and peak
// figures, an honest empty state, and text alternatives (an aria-label summary and a visually hidden table).

import { useEffect, useId, useLayoutEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import {
  formatClock,
  formatDay,
  formatNumber,
  formatValue,
  latestText,
  rateUnitIndex,
  summarize,
  timeLabels,
  valueAxis,
  zoneLabel,
  type ChartPoint,
  type SeriesFigures,
  type ValueKind,
} from '../lib/chart';
import { downsample, type Downsampled } from '../lib/downsample';

export interface ChartSeries extends SeriesFigures {
  points: readonly ChartPoint[];
}

interface Props {
  title: string;
  kind: ValueKind;
  series: readonly ChartSeries[];
  /** The visible span, unix seconds. */
  from: number;
  to: number;
  /** Seconds per sample. */
  resolution: number;
  /** "the last 5 minutes", for the text alternatives. */
  phrase: string;
  /** Charts with the same key move their cursors together. */
  syncKey?: string;
  height?: number;
}

/** Series colours (blue, orange, purple: told apart with the common colour-vision deficiencies too). */
export const COLORS = ['#1f5fbf', '#d4610f', '#7a3fa0', '#1e7a3c'];
const BANDS = ['rgba(31,95,191,0.16)', 'rgba(212,97,15,0.16)', 'rgba(122,63,160,0.16)', 'rgba(30,122,60,0.16)'];
/** Room uPlot takes for the value axis and padding; the rest of the width is one bucket per pixel. */
const AXIS_ROOM = 64;

/** Whether this environment can draw on a canvas (unit tests' DOM cannot). */
function canDraw(): boolean {
  try {
    return typeof document !== 'undefined' && document.createElement('canvas').getContext('2d') !== null;
  } catch {
    return false;
  }
}

/** The x values and every series' values on one time axis, reduced to at most one bucket per pixel. */
function reduce(series: readonly ChartSeries[], from: number, to: number, pixels: number, resolution: number) {
  const times = new Set<number>();
  for (const s of series) for (const [t] of s.points) if (t >= from) times.add(t);
  const t = [...times].sort((a, b) => a - b);
  const index = new Map(t.map((v, i) => [v, i]));
  const values = series.map((s) => {
    const ys = new Array<number | null>(t.length).fill(null);
    for (const [at, v] of s.points) {
      const i = index.get(at);
      if (i !== undefined) ys[i] = v;
    }
    return ys;
  });
  return downsample(t, values, from, to, pixels, resolution);
}

function toData(d: Downsampled): uPlot.AlignedData {
  // [x, avg of each series..., then max and min of each series for the bands]
  const cols: (number | null)[][] = d.series.map((s) => s.avg);
  for (const s of d.series) cols.push(s.max, s.min);
  return [d.t, ...cols] as uPlot.AlignedData;
}

interface Readout {
  t: number;
  step: number;
  values: (number | null)[];
  maxes: (number | null)[];
}

function sameValues<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function sameReadout(a: Readout | null, b: Readout | null): boolean {
  if (a === null || b === null) return a === b;
  return a.t === b.t && a.step === b.step && sameValues(a.values, b.values) && sameValues(a.maxes, b.maxes);
}

/** Whether two plots' data are the same numbers (then uPlot is not given them again). */
function sameData(a: uPlot.AlignedData | null, b: uPlot.AlignedData): boolean {
  if (a === null || a.length !== b.length) return false;
  return a.every((col, i) => {
    const other = b[i] as ArrayLike<number | null | undefined>;
    return col.length === other.length && Array.prototype.every.call(col, (v, j) => v === other[j]);
  });
}

export function LineChart({ title, kind, series, from, to, resolution, phrase, syncKey, height = 180 }: Props) {
  const id = useId();
  const frame = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  /** The data the plot was last given. */
  const sent = useRef<uPlot.AlignedData | null>(null);
  const [width, setWidth] = useState(0);
  const [readout, setReadout] = useState<Readout | null>(null);
  const empty = series.every((s) => s.peak === null);
  const peak = Math.max(0, ...series.map((s) => s.peak?.value ?? 0));
  const axis = valueAxis(peak, kind);
  // Byte rates are labelled in the one binary unit that suits the peak (the unit is in the title).
  const scale = kind === 'bps' ? 1024 ** rateUnitIndex(peak) : 1;
  const reduced = reduce(series, from, to, Math.max(40, (width || 480) - AXIS_ROOM), resolution);
  const latestRef = useRef({ reduced, kind });
  latestRef.current = { reduced, kind };

  // Follow the frame's width.
  useLayoutEffect(() => {
    const el = frame.current;
    if (!el) return;
    const measure = () => {
      if (el.clientWidth > 0) setWidth(el.clientWidth);
    };
    measure();
    if (typeof ResizeObserver === 'undefined') return;
    const observer = new ResizeObserver(measure);
    observer.observe(el);
    return () => observer.disconnect();
  }, []);

  // Create the plot once it has a width; rebuild when the series or the unit change.
  const labels = series.map((s) => s.label).join('|');
  useEffect(() => {
    const el = frame.current;
    if (!el || width === 0 || empty || !canDraw()) return;
    const n = series.length;
    const opts: uPlot.Options = {
      width,
      height,
      legend: { show: false },
      cursor: {
        sync: syncKey ? { key: syncKey } : undefined,
        points: { size: 6 },
        drag: { x: false, y: false },
      },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, valueAxis(max, kind).max] } },
      axes: [
        {
          values: (_u, ticks) => timeLabels(ticks),
          size: 44,
          grid: { stroke: '#eef0f3' },
        },
        {
          // Ticks on nice values in the unit shown (1, 2, 2.5, 5 × 10^n MiB/s), not on round byte counts.
          splits: (_u, _i, _min, max) => valueAxis(max, kind).ticks,
          values: (_u, ticks) => ticks.map((v) => formatNumber(v / scale)),
          size: 52,
          grid: { stroke: '#eef0f3' },
        },
      ],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          // Reads are drawn wider, under writes, so a write line on top never hides them completely.
          width: i === 0 ? 2.5 : 1.5,
          spanGaps: false,
          points: { show: false },
        })),
        ...series.flatMap((s) => [
          { label: `${s.label} max`, stroke: 'transparent', points: { show: false } },
          { label: `${s.label} min`, stroke: 'transparent', points: { show: false } },
        ]),
      ],
      bands: series.map((_, i) => ({
        series: [n + 1 + 2 * i, n + 2 + 2 * i] as [number, number],
        fill: BANDS[i % BANDS.length],
      })),
      hooks: {
        setCursor: [
          (u) => {
            const idx = u.cursor.idx;
            const { reduced: r } = latestRef.current;
            // uPlot calls this hook again whenever it is given data while the cursor is on the plot; an update
            // that changes nothing must not render again, or setData, this hook and the render loop forever.
            const next =
              idx === null || idx === undefined || r.t[idx] === undefined
                ? null
                : {
                    t: r.t[idx] as number,
                    step: r.step,
                    values: r.series.map((s) => s.avg[idx] ?? null),
                    maxes: r.series.map((s) => s.max[idx] ?? null),
                  };
            setReadout((prev) => (sameReadout(prev, next) ? prev : next));
          },
        ],
      },
    };
    const data = toData(latestRef.current.reduced);
    const u = new uPlot(opts, data, el);
    plot.current = u;
    sent.current = data;
    return () => {
      u.destroy();
      plot.current = null;
      sent.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [labels, empty, kind, scale, syncKey, height, width === 0]);

  // Resize and new data go to the existing plot (data only when its numbers changed).
  useEffect(() => {
    const u = plot.current;
    if (!u) return;
    if (u.width !== width) u.setSize({ width, height });
    const data = toData(reduced);
    if (sameData(sent.current, data)) return;
    sent.current = data;
    u.setData(data);
  });

  const zone = zoneLabel(to);
  return (
    <figure class="chart" aria-labelledby={`${id}-title`}>
      <figcaption id={`${id}-title`} class="chart-title">
        {title}
        {!empty && <span class="chart-unit"> ({axis.unit})</span>}
      </figcaption>
      <ul class="chart-legend" aria-hidden="true">
        {series.map((s, i) => (
          <li key={s.label}>
            <span class="chart-swatch" style={{ background: COLORS[i % COLORS.length] }} />
            <span class="chart-series">{s.label}</span>{' '}
            {readout ? (
              <span class="chart-figures">
                {readout.values[i] === null || readout.values[i] === undefined
                  ? '–'
                  : formatValue(readout.values[i] as number, kind)}
                {readout.step > resolution && readout.maxes[i] !== null && readout.maxes[i] !== undefined
                  ? ` (max ${formatValue(readout.maxes[i] as number, kind)})`
                  : ''}
              </span>
            ) : s.peak === null ? (
              <span class="muted">no I/O</span>
            ) : (
              <span class="chart-figures">
                {s.latest === null ? 'idle now' : `latest ${formatValue(s.latest, kind)}`} · peak{' '}
                {formatValue(s.peak.value, kind)}
              </span>
            )}
          </li>
        ))}
        {readout && (
          <li class="chart-at">
            {formatDay(readout.t)} {formatClock(readout.t, true)}
            {readout.step > resolution ? `, ${readout.step} s average` : ''}
          </li>
        )}
      </ul>
      <div
        class="chart-frame"
        ref={frame}
        style={{ height: `${height}px` }}
        role="img"
        aria-label={summarize(title, phrase, series, kind)}
      >
        {empty && <div class="chart-empty">No I/O in this window</div>}
      </div>
      <p class="chart-zone muted">Local time ({zone})</p>
      {/* A table cannot be shrunk to 1 px itself: a hidden wrapper clips it so it never widens the page. */}
      <div class="sr-only">
        <table>
          <caption>
            {title}, {phrase}
          </caption>
          <thead>
            <tr>
              <th scope="col">Series</th>
              <th scope="col">Latest</th>
              <th scope="col">Peak</th>
              <th scope="col">Peak at</th>
            </tr>
          </thead>
          <tbody>
            {series.map((s) => (
              <tr key={s.label}>
                <th scope="row">{s.label}</th>
                <td>{latestText(s, kind)}</td>
                <td>{s.peak === null ? 'no I/O in this window' : formatValue(s.peak.value, kind)}</td>
                <td>{s.peak === null ? '–' : `${formatClock(s.peak.t, true)} ${formatDay(s.peak.t)}`}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </figure>
  );
}
