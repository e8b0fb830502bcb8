/**
 * The example app's page: sign in with the app's own login, then see the
 * team's messages live in `<NotificationCenter>`, send one, and run a job.
 *
 * Everything is on the app's origin: the app's routes (`/api/...`), and
 * pgpulse's inside the app (`/realtime/ws`, `/realtime/api/jobs`). The
 * session cookie authenticates them all, so no token appears anywhere.
 */

import { useEffect, useState, type FormEvent, type ReactElement } from "react";
import { createRoot } from "react-dom/client";

import { submitJob } from "@pgpulse/client";
import { NotificationCenter } from "@pgpulse/client/notification-center";

const REALTIME = `${location.origin}/realtime`;

interface User {
  readonly username: string;
  readonly display_name: string;
  readonly tenant_id: string;
}

/** A call to the app's own API; the session cookie goes with it. */
async function api<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const detail = ((await response.json().catch(() => null)) as { detail?: unknown } | null)?.detail;
    throw new Error(typeof detail === "string" ? detail : `${method} ${path} answered ${response.status}`);
  }
  return (response.status === 204 ? undefined : await response.json()) as T;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function SignIn({ onSignedIn }: { onSignedIn: (user: User) => void }): ReactElement {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: FormEvent): Promise<void> => {
    event.preventDefault();
    try {
      onSignedIn(await api<User>("POST", "/api/login", { username, password }));
    } catch (failure) {
      setError(describe(failure));
    }
  };
  return (
    <main>
      <h1>Sign in</h1>
      <p>
        Tenant <b>acme</b>: alice, bob. Tenant <b>globex</b>: carol, dave. The password is <code>pulse</code>.
      </p>
      <form onSubmit={(event) => void submit(event)} aria-label="Sign in">
        <label>
          User <input name="username" value={username} onChange={(event) => setUsername(event.target.value)} required />
        </label>
        <label>
          Password{" "}
          <input
            name="password"
            type="password"
            value={password}
            onChange={(event) => setPassword(event.target.value)}
            required
          />
        </label>
        <button type="submit">Sign in</button>
        {error !== null ? <span role="alert">{error}</span> : null}
      </form>
    </main>
  );
}

function SendMessage(): ReactElement {
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const send = async (event: FormEvent): Promise<void> => {
    event.preventDefault();
    try {
      // The app's own endpoint: it stores the message and publishes its event in one transaction.
      await api("POST", "/api/messages", { text });
      setText("");
      setError(null);
    } catch (failure) {
      setError(describe(failure));
    }
  };
  return (
    <form onSubmit={(event) => void send(event)} aria-label="Send a message">
      <label>
        Message to your team <input name="text" value={text} onChange={(event) => setText(event.target.value)} required />
      </label>
      <button type="submit">Send</button>
      {error !== null ? <span role="alert">{error}</span> : null}
    </form>
  );
}

function RunJob(): ReactElement {
  const [seconds, setSeconds] = useState("3");
  const [steps, setSteps] = useState("6");
  const [submitted, setSubmitted] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const run = async (event: FormEvent): Promise<void> => {
    event.preventDefault();
    try {
      // pgpulse's route inside the app: the job is the signed-in user's, and so are its events.
      const { jobId } = await submitJob({ url: REALTIME, kind: "sleep", input: { seconds: Number(seconds), steps: Number(steps) } });
      setSubmitted(jobId);
      setError(null);
    } catch (failure) {
      setError(describe(failure));
    }
  };
  return (
    <form onSubmit={(event) => void run(event)} aria-label="Run a job">
      <label>
        Seconds{" "}
        <input name="seconds" type="number" min={0} max={60} step="any" value={seconds} onChange={(event) => setSeconds(event.target.value)} required />
      </label>
      <label>
        Steps <input name="steps" type="number" min={1} max={100} value={steps} onChange={(event) => setSteps(event.target.value)} required />
      </label>
      <button type="submit">Run a sleep job</button>
      {submitted !== null ? <output data-submitted-job={submitted}>Job {submitted} queued; its progress shows above.</output> : null}
      {error !== null ? <span role="alert">{error}</span> : null}
    </form>
  );
}

function Home({ user, onSignedOut }: { user: User; onSignedOut: () => void }): ReactElement {
  const signOut = async (): Promise<void> => {
    await api("POST", "/api/logout");
    onSignedOut();
  };
  return (
    <main>
      <header>
        <h1>
          <span data-user={user.username}>{user.display_name}</span>, team <span data-tenant={user.tenant_id}>{user.tenant_id}</span>
        </h1>
        <button type="button" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      {/* History from the app's GET /api/notifications, jobs and live events from pgpulse under /realtime. */}
      <NotificationCenter
        url={location.origin}
        path="/realtime/ws"
        jobsUrl={REALTIME}
        defaultOpen
        storageKey={`example:read:${user.username}`}
      />
      <SendMessage />
      <RunJob />
    </main>
  );
}

function App(): ReactElement {
  // undefined: not known yet; null: signed out.
  const [user, setUser] = useState<User | null | undefined>(undefined);
  useEffect(() => {
    api<User>("GET", "/api/me").then(setUser, () => setUser(null));
  }, []);
  if (user === undefined) return <p>Loading…</p>;
  if (user === null) return <SignIn onSignedIn={setUser} />;
  // Keyed by user: signing in as someone else opens a new subscription.
  return <Home key={user.username} user={user} onSignedOut={() => setUser(null)} />;
}

const root = document.getElementById("root");
if (root === null) throw new Error("index.html lost its #root element");
createRoot(root).render(<App />);
