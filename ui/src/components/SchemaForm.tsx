// A form generated from a JSON Schema (React Hook Form + the Zod schema from lib/schemaForm).
// Every valid change is reported through onChange, so the builder validates and previews as you type.
import { useEffect, useMemo, useRef } from 'react';
import { useForm, type Resolver, type Control, type UseFormRegister, useWatch, type FieldErrors } from 'react-hook-form';
import { zodResolver } from '@hookform/resolvers/zod';
import { fieldsOf, fromFormValues, isShown, toFormValues, zodFor, type FieldSpec, type FormValues, type JsonSchema } from '../lib/schemaForm';
import type { JsonObject } from '../lib/document';

interface Props {
  schema: JsonSchema;
  value: JsonObject;
  onChange: (v: JsonObject) => void;
  role?: 'source' | 'destination';
  readOnly?: boolean;
  idPrefix: string;
}

export function SchemaForm({ schema, value, onChange, role, readOnly, idPrefix }: Props) {
  const fields = useMemo(() => fieldsOf(schema), [schema]);
  const resolver = useMemo(() => zodResolver(zodFor(fields) as never) as unknown as Resolver<FormValues>, [fields]);
  const { register, control, formState, trigger, getValues } = useForm<FormValues>({ defaultValues: toFormValues(fields, value), resolver, mode: 'onChange' });
  const latest = useRef(value);
  latest.current = value;
  const values = useWatch({ control }) as FormValues;
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      void trigger();
      return;
    }
    onChange(fromFormValues(fields, getValues(), latest.current, role));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [JSON.stringify(values)]);
  return (
    <fieldset disabled={readOnly} className="space-y-3">
      <Fields fields={fields} values={values} register={register} errors={formState.errors} prefix="" role={role} idPrefix={idPrefix} control={control} />
    </fieldset>
  );
}

function Fields({ fields, values, register, errors, prefix, role, idPrefix, control, outer = {} }: { fields: FieldSpec[]; values: FormValues; outer?: FormValues; register: UseFormRegister<FormValues>; errors: FieldErrors; prefix: string; role?: 'source' | 'destination'; idPrefix: string; control: Control<FormValues> }) {
  return (
    <>
      {fields
        .filter((f) => isShown(f, { ...outer, ...(values ?? {}) }, role))
        .map((f) => {
          const name = prefix + f.name;
          const id = `${idPrefix}-${name.replace(/\./g, '-')}`;
          const err = (errors as Record<string, { message?: string }>)[f.name]?.message;
          const help = f.description ? <p id={`${id}-help`} className="mt-0.5 text-xs text-slate-500">{f.description}</p> : null;
          const common = { id, 'aria-describedby': f.description ? `${id}-help` : undefined, 'aria-invalid': err ? true : undefined, 'data-field': name } as const;
          if (f.kind === 'object') {
            const inner = { ...outer, ...(values ?? {}), ...((values?.[f.name] as FormValues) ?? {}) };
            // A group none of whose fields applies (parameters of an operation that takes none) is not shown.
            if (!f.children!.some((c) => isShown(c, inner, role))) return null;
            return (
              <details key={name} className="rounded border border-slate-200 p-2 dark:border-slate-700" open={f.required || f.name === 'parameters'}>
                <summary className="cursor-pointer text-xs font-medium">{f.label}</summary>
                {help}
                <div className="mt-2 space-y-3">
                  <Fields fields={f.children!} values={(values?.[f.name] as FormValues) ?? {}} register={register} errors={((errors as Record<string, unknown>)[f.name] ?? {}) as FieldErrors} prefix={name + '.'} role={role} idPrefix={idPrefix} control={control} outer={{ ...outer, ...(values ?? {}) }} />
                </div>
              </details>
            );
          }
          const labelEl = (
            <label htmlFor={id} className="label">
              {f.label}
              {f.required && <span className="text-red-600"> *</span>}
            </label>
          );
          let input;
          switch (f.kind) {
            case 'boolean':
              return (
                <div key={name}>
                  <label className="flex items-center gap-2 text-sm">
                    <input type="checkbox" {...common} {...register(name)} /> {f.label}
                  </label>
                  {help}
                </div>
              );
            case 'enum':
              input = (
                <select className="input" {...common} {...register(name)}>
                  <option value="">{f.required ? 'Choose…' : '(default)'}</option>
                  {f.options!.map((o) => (
                    <option key={o} value={o}>
                      {o}
                    </option>
                  ))}
                </select>
              );
              break;
            case 'textarea':
            case 'json':
              input = <textarea className="input font-mono" rows={f.kind === 'textarea' ? 5 : 2} {...common} {...register(name)} />;
              break;
            default:
              input = <input className="input" type={f.kind === 'password' ? 'password' : 'text'} inputMode={f.kind === 'integer' || f.kind === 'number' ? 'decimal' : undefined} placeholder={f.kind === 'list' ? 'a, b, c' : undefined} {...common} {...register(name)} />;
          }
          return (
            <div key={name}>
              {labelEl}
              {input}
              {err && (
                <p role="alert" className="mt-0.5 text-xs text-red-600">
                  {err}
                </p>
              )}
              {help}
            </div>
          );
        })}
    </>
  );
}
