/**
 * stallwatch.js: a minimal browser monitor that sends beacon v1 (docs/beacons.md).
 *
 * Plain ES module, no dependencies, no build step:
 *
 *   import { monitor } from '/clients/stallwatch.js';
 *   const sw = monitor(document.querySelector('video'), {
 *     collector: 'https://collector.example.com', // POSTs go to `${collector}/v1/beacons`
 *     videoId: 'vod-1',
 *     player: { name: 'hls.js', version: Hls.version, hls },  // or { dash }, or { shaka }
 *   });
 *   // later: sw.stop();
 *
 * What it sends: the HTML5 media events (play, playing, pause, seeking, seeked, waiting,
 * ended, error), a heartbeat every `heartbeatMs` while playing, `renditionchange` from the
 * player's own ABR events (hls.js LEVEL_SWITCHED, dash.js QUALITY_CHANGE_RENDERED, Shaka
 * adaptation/variantchanged), player fatal errors, and `viewstart`, `playerready` and
 * `viewend` (on pagehide). Events are batched into one envelope per `flushMs`:
 *
 *   {view_id, video_id, viewer_id, player_name, player_version, stream_type,
 *    video_duration_ms, events: [{event, ts, playhead_ms, seq, event_id, ...}, ...]}
 *
 * On a live stream each event also carries `program_time_ms` or `live_latency_ms` when the
 * player knows it (see livePosition).
 *
 * The envelope's top-level fields are defaults for every event (docs/beacons.md). `seq`
 * increases by one per event within a view and `event_id` is `${view_id}:${seq}`, so a
 * redelivered batch is dropped by the pipeline.
 *
 * HTML5 `stalled` (the network fetch stalled, which can happen while playback continues from
 * the buffer) is deliberately not forwarded: `waiting` is the playback stall signal.
 */

export const VERSION = '1.0.0';

const VIEWER_KEY = 'stallwatch.viewer_id';

/** A random id: a UUID where the browser has one (secure contexts), else 128 random bits. */
function randomId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The viewer id persisted in localStorage (a new random one the first time). */
function persistentViewerId() {
  try {
    let id = localStorage.getItem(VIEWER_KEY);
    if (!id) localStorage.setItem(VIEWER_KEY, (id = randomId()));
    return id;
  } catch {
    return randomId(); // storage disabled: one viewer per page load
  }
}

/** "360p" style rendition name and bitrate from a height and bits/s, as beacon fields. */
function rendition(height, bitrate) {
  const fields = {};
  if (height) fields.rendition = `${height}p`;
  if (Number.isFinite(bitrate) && bitrate > 0) fields.bitrate_bps = Math.round(bitrate);
  return fields;
}

/**
 * Start monitoring a <video> element. Returns {viewId, viewerId, flush(), stop()}.
 *
 * @param {HTMLMediaElement} video
 * @param {object} options
 * @param {string} options.collector     base URL of the collector (no trailing /v1/...)
 * @param {string} options.videoId       the content id (beacon `video_id`)
 * @param {string} [options.viewerId]    default: persisted in localStorage
 * @param {object} [options.player]      {name, version, hls | dash | shaka}: the player instance
 * @param {number} [options.heartbeatMs=10000]  heartbeat period while playing
 * @param {number} [options.flushMs=2000]       how often queued events are POSTed
 * @param {object} [options.dimensions]  extra envelope fields (cdn, country, ...)
 * @param {string} [options.viewId]      default: random. Pass the player's CMCD session id
 *                                       (sid) when it also sends CMCD, so stallwatch counts
 *                                       the view once (docs/cmcd.md)
 */
export function monitor(video, options) {
  const {
    collector, videoId, viewerId = persistentViewerId(), player = {},
    heartbeatMs = 10000, flushMs = 2000, dimensions = {}, viewId = randomId(),
  } = options;
  const endpoint = `${collector.replace(/\/+$/, '')}/v1/beacons`;
  const envelope = {
    view_id: viewId, video_id: videoId, viewer_id: viewerId, ...dimensions,
  };
  if (player.name) envelope.player_name = player.name;
  const version = player.version ?? detectVersion(player);
  if (version) envelope.player_version = String(version);

  let seq = 0;
  let queue = [];
  let heartbeat = null;
  let stopped = false;
  const cleanups = [];

  /** Queue one event; `fields` may carry rendition, bitrate_bps, error_* ... */
  function emit(event, fields = {}) {
    if (stopped) return;
    const s = seq++;
    const live = envelope.stream_type === 'live' ? livePosition(video, player) : {};
    queue.push({
      event, ts: Date.now(), playhead_ms: Math.max(0, Math.round(video.currentTime * 1000)),
      seq: s, event_id: `${viewId}:${s}`, ...live, ...fields,
    });
  }

  /** Duration and stream type, known once metadata is loaded. The player knows a live
   * stream even when the element has a finite duration (hls.js's default). */
  function updateMediaFields() {
    const d = video.duration;
    const live = isLive(player);
    if (d === Infinity || live === true) {
      envelope.stream_type = 'live';
      delete envelope.video_duration_ms;
    } else if (Number.isFinite(d) && d > 0 && (live === false || !hasPlayer(player))) {
      envelope.stream_type = 'on-demand';
      envelope.video_duration_ms = Math.round(d * 1000);
    }
  }

  /**
   * POST the queued events. `final` (pagehide) uses sendBeacon, which survives the page
   * going away. Its body is sent as text/plain on purpose: sendBeacon always sends
   * credentials, so an application/json body would need a CORS preflight answered with the
   * exact origin and Allow-Credentials (`Access-Control-Allow-Origin: *` is refused), while
   * a text/plain beacon is a simple request. The collector reads the body as JSON either way.
   */
  function flush(final = false) {
    if (!queue.length) return;
    const body = JSON.stringify({ ...envelope, events: queue });
    queue = [];
    if (final && navigator.sendBeacon) {
      const blob = new Blob([body], { type: 'text/plain;charset=UTF-8' });
      if (navigator.sendBeacon(endpoint, blob)) return;
    }
    fetch(endpoint, {
      method: 'POST', keepalive: true, body, headers: { 'Content-Type': 'application/json' },
    }).catch(() => {}); // analytics never breaks playback; a lost batch is lost
  }

  function listen(target, type, handler) {
    target.addEventListener(type, handler);
    cleanups.push(() => target.removeEventListener(type, handler));
  }

  // HTML5 media events, forwarded as they are.
  for (const type of ['play', 'playing', 'pause', 'seeking', 'seeked', 'waiting', 'ended']) {
    listen(video, type, () => emit(type));
  }
  listen(video, 'loadedmetadata', updateMediaFields);
  listen(video, 'durationchange', updateMediaFields);
  listen(video, 'error', () => {
    const err = video.error;
    emit('error', {
      error_code: `media:${err?.code ?? 0}`, error_message: err?.message || 'media error', fatal: true,
    });
  });

  // Heartbeats carry the playhead while frames are (supposed to be) moving.
  const beat = () => { if (!video.paused && !video.ended) emit('heartbeat'); };
  heartbeat = setInterval(beat, heartbeatMs);
  const flusher = setInterval(() => flush(), flushMs);

  // Player-specific rendition changes and fatal errors.
  const onRendition = (height, bitrate) => emit('renditionchange', rendition(height, bitrate));
  const onPlayerError = (code, message, fatal) => emit('error', {
    error_code: String(code), error_message: String(message || code), fatal: !!fatal,
  });
  if (player.hls) attachHls(player.hls, onRendition, onPlayerError, cleanups);
  if (player.dash) attachDash(player.dash, onRendition, onPlayerError, cleanups);
  if (player.shaka) attachShaka(player.shaka, onRendition, onPlayerError, listen);

  // The page going away (tab closed, navigation, bfcache) ends the view.
  const onPageHide = () => stop();
  window.addEventListener('pagehide', onPageHide);
  cleanups.push(() => window.removeEventListener('pagehide', onPageHide));

  emit('viewstart');
  emit('playerready'); // monitor() is called on a constructed player
  // Autoplay is play intent from the start: startup time then covers loading the
  // manifest and first segments (HTML5 'play' only fires once the element can start).
  if (video.autoplay && video.paused) emit('play');
  updateMediaFields();

  /** End the view: send `viewend` and everything queued, and remove all listeners. */
  function stop() {
    if (stopped) return;
    emit('viewend');
    stopped = true;
    clearInterval(heartbeat);
    clearInterval(flusher);
    cleanups.forEach((fn) => fn());
    flush(true);
  }

  return { viewId, viewerId, flush: () => flush(), stop };
}

/**
 * Where a live stream's playhead is in program time (the stream's own wall clock), so the
 * pipeline can line up the stalls of viewers with different playhead origins and latencies
 * (docs/detection.md, "Live streams"): `program_time_ms` from hls.js `playingDate` (HLS
 * EXT-X-PROGRAM-DATE-TIME), Shaka `getPlayheadTimeAsDate()`, dash.js `timeAsUTC()` (DASH
 * availability time) or Safari's `getStartDate()`; else `live_latency_ms` from hls.js
 * `latency` or dash.js `getCurrentLiveLatency()`, which trail program time by the stream's
 * packaging delay (they are measured from the playlist's live edge).
 */
function livePosition(video, { hls, dash, shaka }) {
  const date = attempt(() => hls?.playingDate ?? shaka?.getPlayheadTimeAsDate?.())
    ?? dashDate(dash) ?? startDate(video);
  const program = date instanceof Date ? date.getTime() : NaN;
  if (Number.isFinite(program) && program > 0) return { program_time_ms: Math.round(program) };
  const latency = attempt(() => (hls ? hls.latency : dash?.getCurrentLiveLatency?.()));
  if (Number.isFinite(latency) && latency >= 0) return { live_latency_ms: Math.round(latency * 1000) };
  return {};
}

function hasPlayer({ hls, dash, shaka }) {
  return Boolean(hls || dash || shaka);
}

/** Whether the player is playing a live stream (undefined: it cannot tell yet). */
function isLive({ hls, dash, shaka }) {
  return attempt(() => {
    if (hls) return (hls.latestLevelDetails ?? hls.levels?.[hls.currentLevel]?.details)?.live;
    if (dash) return dash.isDynamic?.();
    return shaka?.isLive?.();
  });
}

/** fn(), or undefined if the player throws (some getters throw before a source is loaded). */
function attempt(fn) {
  try {
    return fn();
  } catch {
    return undefined;
  }
}

/** dash.js: the playhead in UTC seconds (a dynamic MPD's availability timeline). */
function dashDate(dash) {
  const seconds = attempt(() => dash?.timeAsUTC?.());
  return Number.isFinite(seconds) && seconds > 0 ? new Date(seconds * 1000) : null;
}

/** Native HLS (Safari): the program date of media time 0, plus the playhead. */
function startDate(video) {
  const start = video.getStartDate?.();
  if (!(start instanceof Date) || !Number.isFinite(start.getTime())) return null;
  return new Date(start.getTime() + video.currentTime * 1000);
}

/** The player's own version string, when the instance exposes it. */
function detectVersion({ hls, dash, shaka }) {
  if (hls) return hls.constructor?.version;
  if (dash) return dash.getVersion?.();
  if (shaka) return shaka.constructor?.version;
  return undefined;
}

/** hls.js: LEVEL_SWITCHED ('hlsLevelSwitched') and fatal ERROR ('hlsError'). */
function attachHls(hls, onRendition, onError, cleanups) {
  const switched = (_, data) => {
    const level = hls.levels?.[data.level];
    if (level) onRendition(level.height, level.bitrate);
  };
  const error = (_, data) => {
    if (data.fatal) onError(`hls:${data.details}`, data.error?.message || data.details, true);
  };
  hls.on('hlsLevelSwitched', switched);
  hls.on('hlsError', error);
  cleanups.push(() => { hls.off('hlsLevelSwitched', switched); hls.off('hlsError', error); });
}

/** dash.js: QUALITY_CHANGE_RENDERED (video only) and ERROR (dash.js errors are fatal). */
function attachDash(dash, onRendition, onError, cleanups) {
  const rendered = (e) => {
    if (e.mediaType !== 'video') return;
    const rep = e.newRepresentation || {};
    onRendition(rep.height, rep.bandwidth);
  };
  const error = (e) => {
    const err = e.error || {};
    onError(`dash:${err.code ?? 'unknown'}`, err.message, true);
  };
  dash.on('qualityChangeRendered', rendered);
  dash.on('error', error);
  cleanups.push(() => { dash.off('qualityChangeRendered', rendered); dash.off('error', error); });
}

/** Shaka: 'adaptation' (ABR) and 'variantchanged' (manual), 'error' (severity 2 = critical). */
function attachShaka(shaka, onRendition, onError, listen) {
  let last = null;
  const changed = () => {
    const active = shaka.getVariantTracks?.().find((t) => t.active);
    if (!active || active.id === last) return;
    last = active.id;
    onRendition(active.height, active.videoBandwidth || active.bandwidth);
  };
  listen(shaka, 'adaptation', changed);
  listen(shaka, 'variantchanged', changed);
  listen(shaka, 'loaded', changed); // the initial variant
  listen(shaka, 'error', (e) => {
    const err = e.detail || {};
    onError(`shaka:${err.code ?? 'unknown'}`, err.message || `shaka error ${err.code}`,
      err.severity === 2);
  });
}
