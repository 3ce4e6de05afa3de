// The Configuration tab: every option's effective value and where it comes from (global, pool or this image), and
// the Quality of Service form that sets image overrides or resets them to the inherited value.

import { humanConfigValue } from '../../lib/configValue';
import { useEffect, useState } from 'preact/hooks';
import { api } from '../../api/client';
import { EP } from '../../api/endpoints';
import type { ConfigEntry } from '../../api/types';
import { Callout } from '../../components/Callout';
import { ErrorText } from '../../components/ErrorText';
import { Field } from '../../components/Field';
import { SizeInput } from '../../components/SizeInput';
import { useAction } from '../../components/useAction';
import { useLoad } from '../../components/useLoad';
import { QOS_OPTIONS, qosField, qosValue, RATE_UNITS, type QosField } from '../../lib/qos';
import { notify } from '../../state/notices';
import { useSession } from '../../state/session';

function fieldsOf(entries: ConfigEntry[]): Record<string, QosField> {
  return Object.fromEntries(
    QOS_OPTIONS.map((o) => [o.name, qosField(o, entries.find((e) => e.name === o.name)?.value ?? '0')]),
  );
}

export function ConfigurationTab({ spec }: { spec: string }) {
  const { can } = useSession();
  const config = useLoad(() => api.imageConfig(spec), [spec]);
  const [fields, setFields] = useState<Record<string, QosField>>({});
  const action = useAction();
  const entries = config.data ?? [];
  useEffect(() => setFields(fieldsOf(config.data ?? [])), [config.data]);

  const original = fieldsOf(entries);
  const source = (name: string) => entries.find((e) => e.name === name)?.source ?? 'global';
  const changed = QOS_OPTIONS.filter((o) => {
    const now = fields[o.name];
    const before = original[o.name];
    if (!now || !before) return false;
    const a = qosValue(o, now);
    const b = qosValue(o, before);
    return !(a.ok && b.ok && a.value === b.value);
  });
  const errors = Object.fromEntries(
    QOS_OPTIONS.map((o) => {
      const f = fields[o.name];
      const v = f ? qosValue(o, f) : null;
      return [o.name, v && !v.ok ? v.error : undefined];
    }),
  );
  const invalid = Object.values(errors).some(Boolean);

  const save = async (e: Event) => {
    e.preventDefault();
    if (invalid) return;
    const ok = await action.run(async () => {
      for (const o of changed) {
        const f = fields[o.name];
        const v = f ? qosValue(o, f) : null;
        if (v?.ok) await api.setImageConfig(spec, o.name, v.value);
      }
    });
    if (ok) notify('success', `Quality of Service of ${spec} was saved.`);
    config.reload();
  };

  const reset = async (name: string) => {
    const ok = await action.run(async () => void (await api.setImageConfig(spec, name, null)));
    if (ok) notify('success', `${name} of ${spec} now inherits its value.`);
    config.reload();
  };

  return (
    <div>
      <Callout kind="warning">
        Incorrect advanced overrides can degrade performance or introduce inconsistent behavior across images.
      </Callout>
      <ErrorText error={config.error} />
      {can(EP.setImageConfig) && config.data && (
        <form class="qos" onSubmit={save} aria-labelledby="qos-title">
          <h3 id="qos-title">Quality of Service</h3>
          <p class="muted">
            0 means unlimited. Limits apply to clients of the NBD data path at once, without reconnecting.
          </p>
          <div class="qos-grid">
            {QOS_OPTIONS.map((o) => {
              const f = fields[o.name] ?? { value: '0', unit: 'B' };
              const set = (value: string, unit = f.unit) => setFields({ ...fields, [o.name]: { value, unit } });
              return (
                <div class="qos-field" key={o.name}>
                  <Field
                    label={o.label}
                    error={errors[o.name]}
                    help={
                      <span>
                        {o.name} · from {source(o.name)}
                      </span>
                    }
                  >
                    {({ id, describedBy, invalid: bad }) =>
                      o.kind === 'bps' ? (
                        <SizeInput
                          id={id}
                          value={f.value}
                          unit={f.unit}
                          units={RATE_UNITS}
                          suffix="/s"
                          describedBy={describedBy}
                          invalid={bad}
                          onChange={set}
                        />
                      ) : (
                        <input
                          id={id}
                          inputMode="numeric"
                          value={f.value}
                          aria-describedby={describedBy}
                          aria-invalid={bad}
                          onInput={(e) => set(e.currentTarget.value)}
                        />
                      )
                    }
                  </Field>
                  {source(o.name) === 'image' && (
                    <button
                      type="button"
                      class="link-button"
                      aria-label={`Reset ${o.label}`}
                      disabled={action.busy}
                      onClick={() => void reset(o.name)}
                    >
                      Reset
                    </button>
                  )}
                </div>
              );
            })}
          </div>
          <ErrorText error={action.error} />
          <button type="submit" class="primary" disabled={action.busy || invalid || changed.length === 0}>
            Save Quality of Service
          </button>
        </form>
      )}
      <div class="table-wrap">
        <table class="table">
          <caption>Effective configuration of {spec}</caption>
          <thead>
            <tr>
              <th scope="col">Option</th>
              <th scope="col">Value</th>
              <th scope="col">Source</th>
            </tr>
          </thead>
          <tbody>
            {entries.map((e) => (
              <tr key={e.name}>
                <th scope="row">
                  <code>{e.name}</code>
                </th>
                <td>
                  {humanConfigValue(e.name, e.value) ?? e.value}
                  {humanConfigValue(e.name, e.value) && <span class="muted"> ({e.value} bytes)</span>}
                </td>
                <td>
                  <span class={e.source === 'image' ? 'badge badge-info' : 'badge'}>{e.source}</span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
