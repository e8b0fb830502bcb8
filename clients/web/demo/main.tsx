/**
 * The demo page: `<NotificationCenter>` against the server named in the
 * query string, `?server=http://127.0.0.1:8000&token=<jwt>`, with a form to
 * send a notification, one to submit a `sleep` job, and one to ask for a
 * streamed answer (a `stream` job) shown word by word with `useJob`; `pgpulse
 * worker` runs the jobs. `maxDelayMs` and `pingIntervalMs` tune reconnection.
 */

import { useState, type FormEvent, type ReactElement } from "react";
import { createRoot } from "react-dom/client";

import { createNotification, submitJob } from "../src/http.js";
import { NotificationCenter } from "../src/NotificationCenter.js";
import { useJob, usePgpulse } from "../src/react.js";

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

function StreamedAnswer({ jobId }: { jobId: string }): ReactElement {
  // Its own client, opened only once there is something to watch: the job may
  // have streamed part of the answer by then, which useJob reads first.
  const { client } = usePgpulse({ url: server, token, topics: ["ai_jobs"], keep: 0 });
  const job = useJob(jobId, { client });
  return (
    <output className="answer" data-answer-job={jobId} data-status={job.status} aria-live="polite">
      {job.text}
      {job.status === "running" || job.status === "queued" || job.status === "loading" ? <span aria-hidden="true">▍</span> : null}
      {job.status === "failed" ? <span role="alert"> (failed: {job.error})</span> : null}
    </output>
  );
}

function AskForm(): ReactElement {
  const [question, setQuestion] = useState("Why does pgpulse need no broker?");
  const [jobId, setJobId] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const ask = async (event: FormEvent): Promise<void> => {
    event.preventDefault();
    try {
      // The built-in `stream` kind answers with a sample text, a word every 50 ms.
      const submitted = await submitJob({ url: server, token, kind: "stream", input: { question, delay: 0.05 } });
      setJobId(submitted.jobId);
      setError(null);
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };
  return (
    <form onSubmit={(event) => void ask(event)} aria-label="Ask for a streamed answer">
      <label>
        Question <input name="question" value={question} onChange={(event) => setQuestion(event.target.value)} required />
      </label>
      <button type="submit">Ask</button>
      {jobId !== null ? <StreamedAnswer key={jobId} jobId={jobId} /> : null}
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
      <AskForm />
    </>
  );
}

const root = document.getElementById("root");
if (root === null) throw new Error("demo/index.html lost its #root element");
createRoot(root).render(<Demo />);
