/**
 * The page the hooks' browser tests drive: `?server=&token=&view=`, each
 * view one hook, its state written into data attributes for the test to read.
 * - `topics`: `usePgpulse` with topics a test changes with buttons.
 */

import { useState, type ReactElement } from "react";
import { createRoot } from "react-dom/client";

import { usePgpulse } from "../../src/react.js";

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

function Page(): ReactElement {
  switch (params.get("view")) {
    case "topics":
      return <Topics />;
    default:
      return <p>unknown view</p>;
  }
}

const root = document.getElementById("root");
if (root === null) throw new Error("index.html lost its #root element");
createRoot(root).render(<Page />);
