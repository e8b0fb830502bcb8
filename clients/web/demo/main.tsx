/**
 * The demo page: `<NotificationCenter>` against the server named in the
 * query string, `?server=http://127.0.0.1:8000&token=<jwt>`, with a form to
 * send a notification and one to submit a `sleep` job, which `pgpulse
 * worker` runs. `maxDelayMs` and `pingIntervalMs` tune reconnection.
 */

import { useState, type FormEvent, type ReactElement } from "react";
import { createRoot } from "react-dom/client";

import { createNotification, submitJob } from "../src/http.js";
import { NotificationCenter } from "../src/NotificationCenter.js";

const params = new URLSearchParams(location.search);
const server = params.get("server") ?? location.origin;
const token = params.get("token") ?? "";

function numberParam(name: string): number | undefined {
  const value = params.get(name);
  return value === null || value === "" ? undefined : Number(value);
}

function SendForm(): ReactElement {
  const [message, setMessage] = useState("");
  const [error, setError] = useState<string | null>(null);
  const send = async (event: FormEvent): Promise<void> => {
    event.preventDefault();
    try {
      await createNotification({ url: server, token }, message);
      setMessage("");
      setError(null);
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };
  return (
    <form onSubmit={(event) => void send(event)} aria-label="Send a notification">
      <label>
        Message <input value={message} onChange={(event) => setMessage(event.target.value)} required />
      </label>
      <button type="submit">Send</button>
      {error !== null ? <span role="alert">{error}</span> : null}
    </form>
  );
}

function JobForm(): ReactElement {
  const [seconds, setSeconds] = useState("3");
  const [steps, setSteps] = useState("6");
  const [submitted, setSubmitted] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const run = async (event: FormEvent): Promise<void> => {
    event.preventDefault();
    try {
      const input = { seconds: Number(seconds), steps: Number(steps) };
      const { jobId } = await submitJob({ url: server, token, kind: "sleep", input });
      setSubmitted(jobId);
      setError(null);
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };
  return (
    <form onSubmit={(event) => void run(event)} aria-label="Run a job">
      <label>
        Seconds{" "}
        <input
          name="seconds"
          type="number"
          min={0}
          step="any"
          value={seconds}
          onChange={(event) => setSeconds(event.target.value)}
          required
        />
      </label>
      <label>
        Steps{" "}
        <input
          name="steps"
          type="number"
          min={1}
          value={steps}
          onChange={(event) => setSteps(event.target.value)}
          required
        />
      </label>
      <button type="submit">Run a sleep job</button>
      {submitted !== null ? <output data-submitted-job={submitted}>Submitted job {submitted}</output> : null}
      {error !== null ? <span role="alert">{error}</span> : null}
    </form>
  );
}

function Demo(): ReactElement {
  if (token === "") {
    return (
      <p>
        Add <code>?server=http://127.0.0.1:8000&amp;token=…</code> to the address (mint one with{" "}
        <code>pgpulse token --tenant acme --scope publish --scope jobs</code>).
      </p>
    );
  }
  const maxDelayMs = numberParam("maxDelayMs");
  return (
    <>
      <NotificationCenter
        url={server}
        token={token}
        defaultOpen
        backoff={maxDelayMs === undefined ? undefined : { initialDelayMs: Math.min(500, maxDelayMs), maxDelayMs }}
        pingIntervalMs={numberParam("pingIntervalMs")}
        pongTimeoutMs={numberParam("pongTimeoutMs")}
      />
      <SendForm />
      <JobForm />
    </>
  );
}

const root = document.getElementById("root");
if (root === null) throw new Error("demo/index.html lost its #root element");
createRoot(root).render(<Demo />);
