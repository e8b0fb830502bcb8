/**
 * The page the hooks' browser tests drive: `?server=&token=&view=`, each
 * view one hook, its state written into data attributes for the test to read.
 * - `topics`: `usePgpulse` with topics a test changes with buttons.
 * - `job`: `useJob(jobId)` on a client that reads `topics` (default
 *   `other`, so the hook has to subscribe it to `ai_jobs`).
 * - `presence`: `usePresence("room")` with `info` `{name}` (a button renames).
 */

import { useState, type ReactElement } from "react";
import { createRoot } from "react-dom/client";

import { PgpulseProvider, useJob, usePgpulse, usePresence } from "../../src/react.js";

const params = new URLSearchParams(location.search);
const server = params.get("server") ?? location.origin;
const token = params.get("token") ?? "";

const TOPIC_CHOICES = ["a", "a,b", "b"] as const;

function Topics(): ReactElement {
  const [choice, setChoice] = useState<string>(params.get("topics") ?? "a");
  const topics = choice.split(",");
  const { status, events } = usePgpulse({ url: server, token, topics, keep: 1000 });
  return (
    <section data-view="topics" data-status={status} data-topics={choice}>
      {TOPIC_CHOICES.map((option) => (
        <button key={option} type="button" data-choose={option} onClick={() => setChoice(option)}>
          {option}
        </button>
      ))}
      <ol>
        {events.map((event) => (
          <li key={event.id} data-event-id={event.id} data-topic={event.topic} />
        ))}
      </ol>
    </section>
  );
}

function JobText({ jobId }: { jobId: string }): ReactElement {
  const job = useJob(jobId);
  return (
    <output
      data-view="job"
      data-status={job.status}
      data-progress={job.progress}
      data-attempt={job.attempt}
      data-result={JSON.stringify(job.result)}
      data-load-error={job.loadError ?? ""}
    >
      {job.text}
    </output>
  );
}

function Job(): ReactElement {
  const topics = (params.get("topics") ?? "other").split(",");
  const { client } = usePgpulse({ url: server, token, topics });
  return (
    <PgpulseProvider client={client}>
      <JobText jobId={params.get("jobId") ?? ""} />
    </PgpulseProvider>
  );
}

function Members(): ReactElement {
  const [name, setName] = useState(params.get("name") ?? "someone");
  const { members, self, error } = usePresence<{ name: string }>("room", { info: { name } });
  return (
    <section data-view="presence" data-self={self ?? ""} data-error={error ?? ""}>
      <button type="button" data-rename onClick={() => setName(`${name} the second`)}>
        rename
      </button>
      <ul>
        {members.map((member) => (
          <li key={member.id} data-member-id={member.id} data-user={member.userId ?? ""} data-name={member.info?.name ?? ""} />
        ))}
      </ul>
    </section>
  );
}

function Presence(): ReactElement {
  const { client } = usePgpulse({ url: server, token });
  return (
    <PgpulseProvider client={client}>
      <Members />
    </PgpulseProvider>
  );
}

function Page(): ReactElement {
  switch (params.get("view")) {
    case "topics":
      return <Topics />;
    case "job":
      return <Job />;
    case "presence":
      return <Presence />;
    default:
      return <p>unknown view</p>;
  }
}

const root = document.getElementById("root");
if (root === null) throw new Error("index.html lost its #root element");
createRoot(root).render(<Page />);
