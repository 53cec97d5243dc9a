// Feeds the solver's progress events (src/solver) into a build's ProgressSink, so Control.Status shows the
// solver's vertexes: started → a vertex appears; log → its output; cached / completed / error → it ends.
// Vertex ids are used as the Status digests, so clients tie inputs and logs together.
import type { ProgressEvent } from '../solver/solver.js';
import type { ProgressSink, VertexHandle } from './progress.js';

export function solverProgress(sink: ProgressSink): (e: ProgressEvent) => void {
  const open = new Map<string, VertexHandle>();
  const handle = (e: ProgressEvent): VertexHandle => {
    let h = open.get(e.vertex);
    if (!h) {
      h = sink.vertex(e.name, { digest: e.vertex, inputs: [...e.inputs] });
      open.set(e.vertex, h);
    }
    return h;
  };
  return (e) => {
    switch (e.type) {
      case 'started':
        handle(e);
        break;
      case 'log':
        handle(e).log(e.data, e.stream);
        break;
      case 'cached':
        handle(e).cached();
        open.delete(e.vertex);
        break;
      case 'completed':
        handle(e).complete();
        open.delete(e.vertex);
        break;
      case 'error':
        handle(e).complete(e.error);
        open.delete(e.vertex);
        break;
    }
  };
}
