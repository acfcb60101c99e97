import { useState } from 'react';
import { useNavigate } from 'react-router';
import { useForm } from 'react-hook-form';
import { zodResolver } from '@hookform/resolvers/zod';
import { z } from 'zod';
import { Workflow } from 'lucide-react';
import { api, type Me } from '../api/client';
import { useAuth } from '../store/auth';
import { ErrorText } from '../components/ui';

const schema = z.object({ username: z.string().trim().min(1, 'Enter your user name'), password: z.string().min(1, 'Enter your password') });
type Form = z.infer<typeof schema>;

export function Login() {
  const { register, handleSubmit, formState } = useForm<Form>({ resolver: zodResolver(schema) });
  const [error, setError] = useState<unknown>();
  const navigate = useNavigate();
  const submit = async (f: Form) => {
    setError(undefined);
    try {
      const t = await api<{ access_token: string; refresh_token: string }>('POST', '/auth/login', f);
      useAuth.getState().setTokens(t.access_token, t.refresh_token);
      const me = await api<Me>('GET', '/me');
      useAuth.getState().setMe(me);
      navigate('/');
    } catch (e) {
      setError(e);
    }
  };
  return (
    <div className="flex min-h-screen items-center justify-center p-4">
      <form onSubmit={handleSubmit(submit)} className="card w-full max-w-sm space-y-4" aria-label="Log in">
        <h1 className="flex items-center gap-2 text-xl font-semibold">
          <Workflow className="h-6 w-6 text-indigo-500" aria-hidden /> dagg
        </h1>
        <div>
          <label htmlFor="username" className="label">User name or e-mail</label>
          <input id="username" className="input" autoComplete="username" autoFocus {...register('username')} />
          {formState.errors.username && <p className="text-xs text-red-600">{formState.errors.username.message}</p>}
        </div>
        <div>
          <label htmlFor="password" className="label">Password</label>
          <input id="password" type="password" className="input" autoComplete="current-password" {...register('password')} />
          {formState.errors.password && <p className="text-xs text-red-600">{formState.errors.password.message}</p>}
        </div>
        <ErrorText error={error} />
        <button className="btn-primary w-full justify-center" type="submit" disabled={formState.isSubmitting}>
          Log in
        </button>
      </form>
    </div>
  );
}
