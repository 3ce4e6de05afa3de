// A small dependency-free SVG line chart: a value axis from 0 with its unit, a local-time axis, one line per series
// (broken where samples are missing), a legend with the latest and peak figures, an honest empty state, and text
// alternatives (an aria-label summary and a visually hidden table of the figures).

import type { RefObject } from 'preact';
import { useEffect, useId, useRef, useState } from 'preact/hooks';
import {
  formatClock,
  formatValue,
  latestText,
  linearScale,
  summarize,
  tickStep,
  timeTicks,
  tracePath,
  valueAxis,
  type ChartPoint,
  type SeriesFigures,
  type ValueKind,
} from '../lib/chart';

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
  /** Seconds per sample: lines break where samples are further apart than a few of these. */
  resolution: number;
  /** "the last 5 minutes", for the text alternatives. */
  phrase: string;
  height?: number;
}

/** Series colours (blue, orange: told apart with the common colour-vision deficiencies too). */
const COLORS = ['#1f5fbf', '#d4610f', '#6b3fa0', '#1e7a3c'];
const DEFAULT_WIDTH = 480;

/** Follows an element's content width. */
function useWidth(): [RefObject<HTMLDivElement>, number] {
  const [width, setWidth] = useState(DEFAULT_WIDTH);
  const element = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = element.current;
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
  return [element, width];
}

export function LineChart({ title, kind, series, from, to, resolution, phrase, height = 190 }: Props) {
  const id = useId();
  const [frame, width] = useWidth();
  const empty = series.every((s) => s.peak === null);
  const axis = valueAxis(Math.max(0, ...series.map((s) => s.peak?.value ?? 0)), kind);
  const labelWidth = empty ? 0 : Math.max(...axis.labels.map((l) => l.length), axis.unit.length) * 7;
  // Room on the left for the value labels, above for the unit, below for the time labels.
  const left = Math.max(34, labelWidth + 12);
  const box = { left, top: 22, width: Math.max(40, width - left - 14), height: height - 22 - 24 };
  const scale = linearScale(from, to, axis.max, box);
  const ticks = timeTicks(from, to, Math.max(2, Math.floor(box.width / 70)));
  const withSeconds = tickStep(ticks, to - from) < 60;
  const bottom = box.top + box.height;

  return (
    <figure class="chart" aria-labelledby={`${id}-title`}>
      <figcaption id={`${id}-title`} class="chart-title">
        {title}
      </figcaption>
      <ul class="chart-legend" aria-hidden="true">
        {series.map((s, i) => (
          <li key={s.label}>
            <span class="chart-swatch" style={{ background: COLORS[i % COLORS.length] }} />
            <span class="chart-series">{s.label}</span>{' '}
            {s.peak === null ? (
              <span class="muted">no I/O</span>
            ) : (
              <span class="chart-figures">
                {s.latest === null ? 'idle now' : `latest ${formatValue(s.latest, kind)}`} · peak{' '}
                {formatValue(s.peak.value, kind)}
              </span>
            )}
          </li>
        ))}
      </ul>
      <div class="chart-frame" ref={frame} style={{ height: `${height}px` }}>
        <svg
          class="chart-svg"
          width={width}
          height={height}
          viewBox={`0 0 ${width} ${height}`}
          role="img"
          aria-label={summarize(title, phrase, series, kind)}
        >
          {/* Without I/O there is no scale worth labelling: only the time axis and the baseline are drawn. */}
          {!empty && (
            <text class="chart-unit" x={box.left - 6} y={12} text-anchor="end">
              {axis.unit}
            </text>
          )}
          {(empty ? [] : axis.ticks).map((v, i) => (
            <g key={v}>
              <line class="chart-gridline" x1={box.left} x2={box.left + box.width} y1={scale.y(v)} y2={scale.y(v)} />
              <text class="chart-label" x={box.left - 6} y={scale.y(v) + 4} text-anchor="end">
                {axis.labels[i]}
              </text>
            </g>
          ))}
          {ticks
            .filter((t) => scale.x(t) + 26 <= width)
            .map((t) => (
              <g key={t}>
                <line class="chart-axis" x1={scale.x(t)} x2={scale.x(t)} y1={bottom} y2={bottom + 4} />
                <text class="chart-label" x={scale.x(t)} y={bottom + 17} text-anchor="middle">
                  {formatClock(t, withSeconds)}
                </text>
              </g>
            ))}
          <line class="chart-axis" x1={box.left} x2={box.left + box.width} y1={bottom} y2={bottom} />
          <line class="chart-axis" x1={box.left} x2={box.left} y1={box.top} y2={bottom} />
          {empty ? (
            <text class="chart-empty" x={box.left + box.width / 2} y={box.top + box.height / 2} text-anchor="middle">
              No I/O in this window
            </text>
          ) : (
            series.map((s, i) => {
              const traced = tracePath(s.points, scale, resolution * 3, from);
              const color = COLORS[i % COLORS.length];
              return (
                <g key={s.label} class="chart-line">
                  <path d={traced.path} fill="none" stroke={color} stroke-width="2" stroke-linejoin="round" />
                  {traced.dots.map((d, j) => (
                    <circle key={j} cx={d.x} cy={d.y} r="3" fill={color} />
                  ))}
                </g>
              );
            })
          )}
        </svg>
      </div>
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
                <td>{s.peak === null ? '–' : formatClock(s.peak.t, true)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </figure>
  );
}
