// A labelled form field: the label, the control, help text and the inline error, wired with ids for screen readers.

import type { ComponentChildren, JSX } from 'preact';
import { useId } from 'preact/hooks';

interface Props {
  label: string;
  required?: boolean;
  help?: ComponentChildren;
  error?: string | undefined;
  /** Renders the control with the ids it must carry. */
  children: (ids: { id: string; describedBy: string | undefined; invalid: boolean; required: boolean }) => JSX.Element;
}

export function Field({ label, required, help, error, children }: Props) {
  const id = useId();
  const helpId = `${id}-help`;
  const errorId = `${id}-error`;
  const describedBy = [help ? helpId : '', error ? errorId : ''].filter(Boolean).join(' ') || undefined;
  return (
    <div class={error ? 'field field-invalid' : 'field'}>
      {/* The asterisk stays outside the label so the control's name is just the label; aria-required says it. */}
      <div class="field-label">
        <label for={id}>{label}</label>
        {required && <span aria-hidden="true"> *</span>}
      </div>
      {children({ id, describedBy, invalid: Boolean(error), required: Boolean(required) })}
      {help && (
        <div class="field-help" id={helpId}>
          {help}
        </div>
      )}
      {error && (
        <div class="field-error" id={errorId}>
          {error}
        </div>
      )}
    </div>
  );
}
