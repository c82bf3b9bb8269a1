// WritableStream, TransformStream, TextEncoderStream/TextDecoderStream, and ReadableStream's
// pipeTo/pipeThrough/tee: enough for the streaming patterns functions write (a TransformStream's
// readable returned as the body and written to afterwards). A streamed body is collected whole before
// the response leaves: ABI v1 carries one response envelope.

const kSink = Symbol("sink");

class WritableStream {
  constructor(sink = {}, strategy) {
    const state = { sink, chain: Promise.resolve(), closed: false, errored: false, error: undefined, locked: false };
    this[kSink] = state;
    const controller = {
      error(e) {
        state.errored = true;
        state.error = e;
      },
      signal: new AbortController().signal,
    };
    state.controller = controller;
    try {
      const started = sink.start?.(controller);
      state.chain = Promise.resolve(started);
    } catch (e) {
      controller.error(e);
    }
  }
  get locked() { return this[kSink].locked; }
  getWriter() {
    const s = this[kSink];
    if (s.locked) throw new TypeError("WritableStream is locked: it has a writer already");
    s.locked = true;
    return new WritableStreamDefaultWriter(this);
  }
  async close() {
    const w = this.getWriter();
    try {
      await w.close();
    } finally {
      w.releaseLock();
    }
  }
  async abort(reason) {
    const s = this[kSink];
    s.errored = true;
    s.error = reason;
    await s.sink.abort?.(reason);
  }
}

function sinkStep(s, step) {
  const next = s.chain.then(() => {
    if (s.errored) throw s.error;
    return step();
  });
  s.chain = next.then(undefined, (e) => {
    s.errored = true;
    s.error = e;
  });
  return next;
}

class WritableStreamDefaultWriter {
  #stream;
  #closed;
  #resolveClosed;
  constructor(stream) {
    this.#stream = stream;
    this.#closed = new Promise((resolve) => { this.#resolveClosed = resolve; });
  }
  #state() {
    const s = this.#stream?.[kSink];
    if (!s) throw new TypeError("the writer was released");
    return s;
  }
  get desiredSize() { return 1; }
  get ready() { return Promise.resolve(); }
  get closed() { return this.#closed; }
  write(chunk) {
    const s = this.#state();
    if (s.closed) return Promise.reject(new TypeError("the stream is closed"));
    return sinkStep(s, () => s.sink.write?.(chunk, s.controller));
  }
  close() {
    const s = this.#state();
    if (s.closed) return Promise.reject(new TypeError("the stream is closed already"));
    s.closed = true;
    return sinkStep(s, () => s.sink.close?.()).then(() => this.#resolveClosed());
  }
  abort(reason) { return this.#stream ? this.#stream.abort(reason) : Promise.resolve(); }
  releaseLock() {
    if (this.#stream) this.#stream[kSink].locked = false;
    this.#stream = null;
  }
}

class TransformStream {
  #readable;
  #writable;
  constructor(transformer = {}) {
    let rc;
    this.#readable = new ReadableStream({
      start(c) { rc = c; },
      cancel(reason) { return transformer.cancel?.(reason); },
    });
    const tc = {
      enqueue: (chunk) => rc.enqueue(chunk),
      error: (e) => rc.error(e),
      terminate: () => rc.close(),
      get desiredSize() { return 1; },
    };
    const started = Promise.resolve().then(() => transformer.start?.(tc));
    this.#writable = new WritableStream({
      async write(chunk) {
        await started;
        if (transformer.transform) await transformer.transform(chunk, tc);
        else tc.enqueue(chunk);
      },
      async close() {
        await started;
        await transformer.flush?.(tc);
        rc.close();
      },
      abort(reason) { rc.error(reason); },
    });
  }
  get readable() { return this.#readable; }
  get writable() { return this.#writable; }
}

ReadableStream.prototype.pipeTo = async function pipeTo(destination, options = {}) {
  const reader = this.getReader();
  const writer = destination.getWriter();
  try {
    for (;;) {
      if (options?.signal?.aborted) throw options.signal.reason;
      const { value, done } = await reader.read();
      if (done) break;
      await writer.write(value);
    }
    if (!options?.preventClose) await writer.close();
  } catch (e) {
    if (!options?.preventAbort) await writer.abort(e);
    throw e;
  } finally {
    reader.releaseLock();
    writer.releaseLock();
  }
};

ReadableStream.prototype.pipeThrough = function pipeThrough(pair, options) {
  this.pipeTo(pair.writable, options).then(undefined, () => {});
  return pair.readable;
};

ReadableStream.prototype.tee = function tee() {
  const reader = this.getReader();
  const controllers = [];
  let pumping = false;
  const pump = async () => {
    if (pumping) return;
    pumping = true;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          for (const c of controllers) c.close();
          return;
        }
        for (const c of controllers) c.enqueue(value);
      }
    } catch (e) {
      for (const c of controllers) c.error(e);
    }
  };
  const branch = () => new ReadableStream({ start(c) { controllers.push(c); }, pull() { return pump(); } });
  return [branch(), branch()];
};

class TextEncoderStream extends TransformStream {
  constructor() {
    const encoder = new TextEncoder();
    super({ transform(chunk, c) { c.enqueue(encoder.encode(String(chunk))); } });
  }
  get encoding() { return "utf-8"; }
}

class TextDecoderStream extends TransformStream {
  #decoder;
  constructor(label = "utf-8", options = {}) {
    const decoder = new TextDecoder(label, options);
    super({
      transform(chunk, c) {
        const s = decoder.decode(chunk, { stream: true });
        if (s) c.enqueue(s);
      },
      flush(c) {
        const s = decoder.decode();
        if (s) c.enqueue(s);
      },
    });
    this.#decoder = decoder;
  }
  get encoding() { return this.#decoder.encoding; }
  get fatal() { return this.#decoder.fatal; }
  get ignoreBOM() { return this.#decoder.ignoreBOM; }
}

defineGlobals({ WritableStream, WritableStreamDefaultWriter, TransformStream, TextEncoderStream, TextDecoderStream });
