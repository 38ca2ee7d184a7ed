// AudioWorklet processors of the skinnysip page (loaded by phone.js with audioWorklet.addModule).
//
// "pcm-player": plays 16-bit PCM frames posted to its port (from the call's audio WebSocket,
// processorOptions.inputRate Hz mono) through a small jitter buffer: it starts once PRIME_MS are
// queued, plays silence and primes again after running dry (counted in "underruns"), and keeps
// at most MAX_MS, dropping the oldest audio beyond (counted in "dropped"). Linear interpolation
// when the context runs at another rate. Reports {bufferedMs, played, underruns, dropped} ~1/s.
//
// "pcm-capture": the microphone's first channel resampled to processorOptions.outputRate Hz
// (averaging the input samples of each output sample), posted as Int16Array frames of
// processorOptions.frame samples.
"use strict";

const PRIME_MS = 60;
const MAX_MS = 300;

class PcmPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.inputRate = (options.processorOptions && options.processorOptions.inputRate) || 8000;
    this.step = this.inputRate / sampleRate;  // input samples per output sample
    this.capacity = Math.ceil(this.inputRate * MAX_MS / 1000);
    this.prime = Math.ceil(this.inputRate * PRIME_MS / 1000);
    this.ring = new Float32Array(this.capacity + 1);
    this.head = 0;        // read position (integer part)
    this.frac = 0;        // fractional read position
    this.count = 0;       // samples queued
    this.playing = false;
    this.played = 0; this.underruns = 0; this.dropped = 0;
    this.lastReport = 0;
    this.port.onmessage = (ev) => this.push(ev.data);
  }

  push(pcm) {
    const n = pcm.length;
    for (let i = 0; i < n; i++) {
      if (this.count >= this.capacity) {  // full: drop the oldest sample
        this.head = (this.head + 1) % this.ring.length;
        this.count -= 1;
        this.dropped += 1;
      }
      this.ring[(this.head + this.count) % this.ring.length] = pcm[i] / 32768;
      this.count += 1;
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.count >= this.prime) this.playing = true;
    for (let i = 0; i < out.length; i++) {
      if (!this.playing || this.count < 2) {
        if (this.playing) { this.playing = false; this.underruns += 1; }
        out[i] = 0;
        continue;
      }
      const a = this.ring[this.head];
      const b = this.ring[(this.head + 1) % this.ring.length];
      out[i] = a + (b - a) * this.frac;
      this.frac += this.step;
      while (this.frac >= 1) {
        this.frac -= 1;
        this.head = (this.head + 1) % this.ring.length;
        this.count -= 1;
        this.played += 1;
      }
    }
    if (currentTime - this.lastReport >= 1) {
      this.lastReport = currentTime;
      this.port.postMessage({ bufferedMs: Math.round(this.count * 1000 / this.inputRate), played: this.played,
        underruns: this.underruns, dropped: this.dropped });
    }
    return true;
  }
}

class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.outputRate = opts.outputRate || 8000;
    this.frame = opts.frame || 160;
    this.step = sampleRate / this.outputRate;  // input samples per output sample
    this.acc = 0; this.accN = 0; this.pos = 0;
    this.buf = new Int16Array(this.frame);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    for (let i = 0; i < input.length; i++) {
      this.acc += input[i];
      this.accN += 1;
      this.pos += 1;
      if (this.pos >= this.step) {
        this.pos -= this.step;
        const v = Math.max(-1, Math.min(1, this.acc / this.accN));
        this.acc = 0; this.accN = 0;
        this.buf[this.fill++] = Math.round(v * 32767);
        if (this.fill === this.frame) {
          this.port.postMessage(this.buf, [this.buf.buffer]);
          this.buf = new Int16Array(this.frame);
          this.fill = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm-player", PcmPlayer);
registerProcessor("pcm-capture", PcmCapture);
