/**
 * Shared plumbing of the example pages (hls.html, dash.html, shaka.html): query-string
 * parameters, the `window.__sw` status object that tests read, and the optional
 * stallwatch.js beacons. The CMCD configuration itself lives in each page.
 *
 * Query string:
 *   src        manifest URL (HLS master playlist or DASH MPD)
 *   collector  collector base URL, e.g. http://127.0.0.1:8080
 *   vid        viewer id (sent to the collector as ?vid= on the CMCD target URL)
 *   cid        content id (default "vod-1")
 *   sid        CMCD session id (default: a random UUID per page load)
 *   interval   CMCD time-interval ('t') period in seconds (default 5)
 *   beacons=1  also load clients/web/stallwatch.js and send beacon v1
 *   keys=default  drop the event target's includeKeys (to see the player's default keys)
 */

import { monitor } from '../stallwatch.js';

export function params() {
  const q = new URLSearchParams(location.search);
  return {
    src: q.get('src'),
    collector: (q.get('collector') || location.origin).replace(/\/+$/, ''),
    vid: q.get('vid') || 'viewer-1',
    cid: q.get('cid') || 'vod-1',
    sid: q.get('sid') || crypto.randomUUID(),
    interval: Number(q.get('interval') || 5),
    beacons: q.get('beacons') === '1',
    defaultKeys: q.get('keys') === 'default',
  };
}

/**
 * `window.__sw`: what this browser saw, for tests. `stalls` are HTML5 `waiting` events after
 * the first `playing` (time + playhead); `events` every media event of interest.
 */
export function status(video, player, p) {
  const sw = (window.__sw = {
    player, sid: p.sid, cid: p.cid, vid: p.vid, started: Date.now(),
    firstPlaying: null, errors: [], stalls: [], events: [], viewId: null,
  });
  const log = (type) => {
    const entry = { type, t: Date.now(), currentTime: video.currentTime };
    sw.events.push(entry);
    return entry;
  };
  for (const type of ['play', 'playing', 'pause', 'seeking', 'seeked', 'ended', 'stalled']) {
    video.addEventListener(type, () => {
      log(type);
      if (type === 'playing' && sw.firstPlaying === null) sw.firstPlaying = Date.now();
    });
  }
  video.addEventListener('waiting', () => {
    const entry = log('waiting');
    if (sw.firstPlaying !== null && !video.seeking) sw.stalls.push(entry);
  });
  video.addEventListener('error', () => {
    log('error');
    sw.errors.push({ source: 'video', code: video.error?.code, message: video.error?.message });
  });
  return sw;
}

/** Start stallwatch.js beacons when `beacons=1` (returns the monitor or null). */
export function beacons(video, p, player) {
  if (!p.beacons) return null;
  const sw = monitor(video, {
    collector: p.collector, videoId: p.cid, viewerId: p.vid, player,
    viewId: p.sid,           // = the CMCD sid: one view, counted once (docs/cmcd.md)
    heartbeatMs: 10000, flushMs: 2000,
  });
  window.__sw.viewId = sw.viewId;
  return sw;
}
