// The Namespace field of image forms: the pool's namespaces (loaded when the pool changes), default first.

import { api } from '../../api/client';
import { useLoad } from '../../components/useLoad';

interface Props {
  id: string;
  pool: string;
  value: string;
  onChange: (namespace: string) => void;
}

export function NamespaceSelect({ id, pool, value, onChange }: Props) {
  const list = useLoad(() => (pool ? api.namespaces(pool) : Promise.resolve([])), [pool]);
  return (
    <select id={id} value={value} onChange={(e) => onChange(e.currentTarget.value)}>
      <option value="">(default)</option>
      {list.data?.map((n) => (
        <option key={n.namespace} value={n.namespace}>
          {n.namespace}
        </option>
      ))}
    </select>
  );
}
